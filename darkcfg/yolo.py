"""Kept for one release: darkcfg.objective.yolo under its old name (the same module object)."""
import sys

from .objective import yolo as _m

sys.modules[__name__] = _m
