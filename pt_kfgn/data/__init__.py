"""Data sets of Sec. 5: MNIST (IDX files, cached and verified), CURVES and FACES (regenerated)."""
