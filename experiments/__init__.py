"""Scripts that reproduce the paper's figures and benchmarks; each has ``main(**config)`` and a CLI."""
