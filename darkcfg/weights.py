"""Kept for one release: darkcfg.files.weights under its old name (the same module object)."""
import sys

from .files import weights as _m

sys.modules[__name__] = _m
