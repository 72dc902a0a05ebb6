"""Kept for one release: darkcfg.nn.syncbn under its old name (the same module object)."""
import sys

from .nn import syncbn as _m

sys.modules[__name__] = _m
