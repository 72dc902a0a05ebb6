"""Kept for one release: darkcfg.outputs under its old name (the same module object)."""
import sys

from . import outputs as _m

sys.modules[__name__] = _m
