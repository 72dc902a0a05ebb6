"""Kept for one release: darkcfg.outputs under this package's name (the same module object).
Atomic writing moved below every stage (darkcfg/outputs.py) so that config can save a cfg
without importing files/, which reads cfgs."""
import sys

from .. import outputs as _m

sys.modules[__name__] = _m
