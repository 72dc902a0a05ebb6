"""Kept for one release: darkcfg.config.shapes under its old name (the same module object)."""
import sys

from .config import shapes as _m

sys.modules[__name__] = _m
