"""Kept for one release: darkcfg.infer.export under its old name (the same module object)."""
import sys

from .infer import export as _m

sys.modules[__name__] = _m
