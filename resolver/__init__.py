"""jetson-resolve: find what stops a PyTorch CUDA install from loading on a target, and why."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
