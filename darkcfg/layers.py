"""Kept for one release: darkcfg.nn.layers under its old name (the same module object)."""
import sys

from .nn import layers as _m

sys.modules[__name__] = _m
