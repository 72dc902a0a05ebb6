"""Writing files so that a failure never leaves a half-written output behind."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

from .errors import DarkcfgError


@contextmanager
def atomic_output(path: str, force: bool = True):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block
    succeeds.  With ``force=False`` an existing ``path`` is an error."""
    if not force and os.path.exists(path):
        raise DarkcfgError(f"{path}: already exists (use --force to overwrite)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DarkcfgError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part",
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str, data: bytes, force: bool = True) -> None:
    with atomic_output(path, force) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
