"""Everything that converts between files and tensors lives here (images in [-1, 1], NCHW)."""
