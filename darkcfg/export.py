"""Kept for one release: darkcfg.files.export under its old name (the same module object)."""
import sys

from .files import export as _m

sys.modules[__name__] = _m
