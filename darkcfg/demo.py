"""Kept for one release: darkcfg.dataset.demo under its old name (the same module object)."""
import sys

from .dataset import demo as _m

sys.modules[__name__] = _m
