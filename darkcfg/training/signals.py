"""A scheduler's stop (SIGTERM from SLURM, Kubernetes, systemd, ``timeout``; SIGHUP when the
terminal goes) handled as Ctrl-C is: training saves ``_last`` and the state, then stops.

:func:`stop_on_signals`: inside it, SIGTERM and SIGHUP (and SIGINT, when Python's own Ctrl-C
handler is in place) raise :class:`Stopped`, a KeyboardInterrupt, so the one Ctrl-C path saves
for all of them.  Once one has been raised, or the caller sets ``armed = False`` (the save is
under way), further signals are noted in ``noted`` and otherwise ignored, so a second signal
cannot cut the save short.  The previous handlers come back when the block ends (``train`` is
a library function too).  Python runs handlers in the main thread only: elsewhere it is a
no-op.
"""
from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


class Stopped(KeyboardInterrupt):
    """Training was stopped by a signal (``signum``); the CLI exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class _Stop:
    """The handler: the first signal raises Stopped, later ones are noted."""

    def __init__(self):
        self.armed, self.noted = True, []

    def __call__(self, signum, frame):
        if not self.armed:
            self.noted.append(signum)
            return
        self.armed = False
        raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Yields the handler (``.armed``, ``.noted``); see the module docstring."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = STOP_SIGNALS + ((signal.SIGINT,) if signal.getsignal(signal.SIGINT)
                              is signal.default_int_handler else ())
    previous = {s: signal.getsignal(s) for s in signals}
    try:
        for s in signals:
            signal.signal(s, stop)
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
