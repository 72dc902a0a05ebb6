"""Writing files: one rule for every output, and atomic writes.  Beside errors.py, below every
stage (the cfg writer, .weights, plots, detections all write through it), so it imports no
other darkcfg module.

The rule (:func:`check_outputs`, applied by every command before it starts work): an output is
never one of the inputs, and an existing output is replaced only with ``force``.

:func:`atomic_output` writes to a temporary file beside the target and renames it over the target
only when the block succeeds, so a failure (an exception, Ctrl-C or SIGTERM) never leaves a
half-written output or a stray temporary file.  The result gets the mode a plain ``open()`` would
give a new file (0666 less the umask); replacing an existing file keeps that file's mode, and a
symlinked target is followed (the real file is replaced, the link stays).
"""
from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager

from .errors import DarkcfgError


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name one file (through symlinks and hard links), or would."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs, inputs=(), force: bool = False) -> None:
    """Refuse an output that is an input, two outputs that are one file, or an existing output
    without ``force``.  ``None`` entries are ignored."""
    outputs = [str(o) for o in outputs if o is not None]
    inputs = [str(i) for i in inputs if i is not None]
    for k, out in enumerate(outputs):
        for inp in inputs:
            if same_file(out, inp):
                also = "" if out == inp else f" ({inp})"
                raise DarkcfgError(f"{out}: is also an input{also}: inputs are never modified")
        for other in outputs[:k]:
            if same_file(out, other):
                raise DarkcfgError(f"{out}: named twice as an output (also {other})")
        if not force and os.path.lexists(out):
            raise DarkcfgError(f"{out}: already exists (use --force to overwrite)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _sigterm_raises():
    """Make SIGTERM raise SystemExit (as Ctrl-C raises KeyboardInterrupt) so the cleanup of a
    half-written file runs; the previous handler comes back afterwards.  Main thread only."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def atomic_output(path: str, force: bool = True):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block
    succeeds.  With ``force=False`` an existing ``path`` is an error."""
    path = str(path)
    if not force and os.path.lexists(path):
        raise DarkcfgError(f"{path}: already exists (use --force to overwrite)")
    target = _real(path)                     # follow a symlink: replace the real file
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise DarkcfgError(f"{path}: folder {os.path.dirname(os.path.abspath(path))} does not "
                           f"exist")
    if os.path.isdir(target):
        raise DarkcfgError(f"{path}: is a folder")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    else:
        if not stat.S_ISREG(st.st_mode):      # a device, a FIFO: renaming over it replaces it
            raise DarkcfgError(f"{path}: is not a regular file (a device or a pipe): darkcfg "
                               f"writes files only")
        mode = st.st_mode & 0o7777
    with _sigterm_raises():
        try:
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                       suffix=".part", dir=folder)
        except OSError as e:
            raise DarkcfgError(f"{path}: cannot write: {e.strerror}") from None
        os.close(fd)
        try:
            yield tmp
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError) and e.filename in (None, tmp, target):
                raise DarkcfgError(f"{path}: cannot write: {e.strerror or e}") from None
            raise


def atomic_write(path: str, data: bytes, force: bool = True) -> None:
    with atomic_output(path, force) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def save_image(img, dst: str) -> None:
    """Encode the Pillow image ``img`` in memory (format from ``dst``'s extension), then write it
    atomically: Pillow writing a file itself ignores a short write (a full disk or a file-size
    limit left a truncated image and exit 0)."""
    import io
    buf = io.BytesIO()
    img.save(buf, format=_image_format(dst))
    atomic_write(dst, buf.getvalue())


def _image_format(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}.get(ext, "PNG")
