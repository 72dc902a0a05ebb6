"""Helpers several test files share: files compared byte for byte, the CLI run in-process or
as a subprocess, box IoU, binary cross-entropy and small generated data sets.  (Known images
for the augmentation tests are in _images.py.)"""
from __future__ import annotations

import os


def same_bytes(a, b) -> bool:
    """Whether files a and b hold the same bytes (read in 16 MiB pieces: weights are large)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True
