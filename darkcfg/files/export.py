"""Kept for one release: darkcfg.infer.export under this package's name (the same module
object).  Export runs a built model, so it sits downstream of nn/, beside detect and speed."""
import sys

from ..infer import export as _m

sys.modules[__name__] = _m
