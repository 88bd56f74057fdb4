"""Selective Kernel Networks (SKNet) and the ResNeXt / SENet baselines for Keras 3."""

__version__ = "0.1.0"
