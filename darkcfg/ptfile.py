"""Kept for one release: darkcfg.files.ptfile under its old name (the same module object)."""
import sys

from .files import ptfile as _m

sys.modules[__name__] = _m
