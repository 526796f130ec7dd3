"""Triton kernels, one op per module, each with a plain-PyTorch twin (see backend.py)."""

from kernels.backend import BACKENDS, OP_MODULES, Ops, interpreting, resolve_backend

__all__ = ["BACKENDS", "OP_MODULES", "Ops", "interpreting", "resolve_backend"]
