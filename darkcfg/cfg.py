"""Kept for one release: darkcfg.config.cfg under its old name (the same module object)."""
import sys

from .config import cfg as _m

sys.modules[__name__] = _m
