"""Kept for one release: darkcfg.objective.keypoint under its old name (the same module object)."""
import sys

from .objective import keypoint as _m

sys.modules[__name__] = _m
