"""Forward graph: layers, losses and the layer-chain walker (Sec. 2, eq. 1)."""
