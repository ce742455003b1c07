"""Reading avel HDF5 files into splits and batches; input transforms (augment)."""
