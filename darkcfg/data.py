"""Kept for one release: darkcfg.dataset.data under its old name (the same module object)."""
import sys

from .dataset import data as _m

sys.modules[__name__] = _m
