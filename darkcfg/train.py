"""Kept for one release: darkcfg.training.train under its old name (the same module object)."""
import sys

from .training import train as _m

sys.modules[__name__] = _m
