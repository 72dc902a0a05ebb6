"""Kept for one release: darkcfg.dataset.augment under its old name (the same module object)."""
import sys

from .dataset import augment as _m

sys.modules[__name__] = _m
