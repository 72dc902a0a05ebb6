"""Kept for one release: darkcfg.files.io under its old name (the same module object)."""
import sys

from .files import io as _m

sys.modules[__name__] = _m
