"""Experiment grids and their tables (ablate), reproductions of the paper (reproduce, published)."""
