"""Kept for one release: darkcfg.infer.speed under its old name (the same module object)."""
import sys

from .infer import speed as _m

sys.modules[__name__] = _m
