"""Kept for one release: darkcfg.objective.anchors under its old name (the same module object)."""
import sys

from .objective import anchors as _m

sys.modules[__name__] = _m
