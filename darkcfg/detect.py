"""Kept for one release: darkcfg.infer.detect under its old name (the same module object)."""
import sys

from .infer import detect as _m

sys.modules[__name__] = _m
