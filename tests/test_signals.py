"""A scheduler's SIGTERM (or a lost terminal's SIGHUP) stops training as Ctrl-C does: _last and
the state are saved, --resume continues exactly, a second signal during the save changes
nothing, the CLI exits 128 + signum with one line, and train() leaves the caller's handlers.

The expected files and bytes come from an uninterrupted run of the same seed (the way
tests/test_train.py compares a SIGKILLed run), never from darkcfg's earlier output.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from darkcfg.training import train as T

from test_train import _header, small_run  # noqa: F401  (a fixture)

STOPPED = """
import os, signal, subprocess, sys, time, torch
torch.set_num_threads({threads})
from darkcfg.training import train as T
from darkcfg.cli import main
stopping = []
def stop(iteration, model):
    if iteration == {stop_at}:
        stopping.append(True)
        if {group}:      # a scheduler signals the whole group; the workers have it first,
            signal.pthread_sigmask(signal.SIG_BLOCK, [{signum}])   # as when this process is
            subprocess.run([sys.executable, "-c",                   # in a long C call
                            "import os; os.killpg(%d, %d)" % (os.getpgid(0), {signum})])
            time.sleep(1)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [{signum}])
        else:
            os.kill(os.getpid(), {signum})
save_last = T._Run.save_last
def save_during_a_second_signal(self, plot=False):
    if stopping and {second}:      # the stop's save: two more signals arrive
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    save_last(self, plot)
T._Run.save_last = save_during_a_second_signal
train = T.train
T.train = lambda *a, **k: train(*a, callback=stop, **k)
main(["train", {data!r}, {cfg!r}, "--seed", "3", "--workers", "{workers}", "--quiet"],
     prog_name="darkcfg")
"""


@pytest.mark.parametrize("signum,second,workers", [
    (signal.SIGTERM, True, 0),        # a second SIGTERM and a Ctrl-C during the save
    (signal.SIGHUP, False, 0),
    (signal.SIGTERM, False, 2),       # to the process group: the loader's workers get it too
])
def test_a_signal_saves_like_ctrl_c_and_resume_is_bit_identical(small_run, signum, second,
                                                                  workers):
    """6 iterations straight vs a CLI run stopped by the signal at iteration 3 (the last
    savelast=2 save was at 2) and resumed: the same bytes, the same losses."""
    data, cfg, tmp = small_run
    code = STOPPED.format(threads=torch.get_num_threads(), stop_at=3, signum=int(signum),
                          second=second, data=data, cfg=cfg, workers=workers,
                          group=bool(workers))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, start_new_session=True)     # its own process group
    assert p.returncode == 128 + signum, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    lines = [l for l in p.stderr.strip().splitlines() if not l.startswith("warning: ")]
    assert len(lines) == 1 and signal.Signals(signum).name in lines[0], p.stderr
    assert _header(tmp / "backup" / "tiny_last.weights").seen == 3 * 4
    assert not os.path.exists(tmp / "backup" / "tiny_final.weights")
    assert not [f for f in os.listdir(tmp / "backup") if ".part" in f or f.startswith(".")]
    resumed = T.train(data, cfg, quiet=True, resume=True)
    straight = T.train(data, cfg, quiet=True, seed=3, out=str(tmp / "straight"))
    assert open(resumed.files["final"], "rb").read() == \
        open(straight.files["final"], "rb").read()
    assert [x["loss"] for x in resumed.rows] == [x["loss"] for x in straight.rows]


def test_train_raises_stopped_and_gives_the_handlers_back(small_run):
    from darkcfg.training.signals import Stopped
    data, cfg, tmp = small_run
    caught, inside = [], []

    def ours(signum, frame):
        caught.append(signum)

    def stop_at_3(iteration, model):
        inside.append(signal.getsignal(signal.SIGTERM))
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGTERM, ours)
    signal.signal(signal.SIGHUP, ours)
    try:
        with pytest.raises(Stopped) as e:
            T.train(data, cfg, quiet=True, callback=stop_at_3)
        assert e.value.signum == signal.SIGTERM and isinstance(e.value, KeyboardInterrupt)
        assert caught == [] and ours not in inside           # train's handler, not ours
        assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGHUP) is ours
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
        assert _header(tmp / "backup" / "tiny_last.weights").seen == 3 * 4
        r = T.train(data, cfg, quiet=True, resume=True)        # to the end: given back too
        assert r.iteration == 6 and signal.getsignal(signal.SIGTERM) is ours
    finally:
        for s, h in before.items():
            signal.signal(s, h)
