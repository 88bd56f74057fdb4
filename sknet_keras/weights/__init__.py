"""Weights I/O: our weight-file format and hash-checked downloads."""

from sknet_keras.weights.files import (assign_checked, load_weights, read_weights,
                                       save_weights, write_tensors)

__all__ = ["assign_checked", "load_weights", "read_weights", "save_weights", "write_tensors"]
