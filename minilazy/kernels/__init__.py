"""Triton kernels, one op per module, each with a naive torch reference; minilazy/kernels/cpu/ is the tuned CPU path
(see backend.py)."""

from minilazy.kernels.backend import BACKENDS, OP_MODULES, Ops, interpreting, resolve_backend

__all__ = ["BACKENDS", "OP_MODULES", "Ops", "interpreting", "resolve_backend"]
