"""Kept for one release: darkcfg.nn.model under its old name (the same module object)."""
import sys

from .nn import model as _m

sys.modules[__name__] = _m
