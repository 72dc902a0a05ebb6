"""Kept for one release: darkcfg.evaluation.evaluate under its old name (the same module object)."""
import sys

from .evaluation import evaluate as _m

sys.modules[__name__] = _m
