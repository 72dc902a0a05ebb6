"""Kept for one release: darkcfg.evaluation.validate under its old name (the same module object)."""
import sys

from .evaluation import validate as _m

sys.modules[__name__] = _m
