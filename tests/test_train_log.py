"""train's progress lines without a terminal (nohup, a log file): the first iteration, at least
every --log-every seconds, every save, every mAP evaluation (with whether it is the new best),
the end, and "resumed from" on --resume; every line flushed as it is printed.

When a line is due is worked out in the test from those rules, the .data's savelast /
saveweights cadence and a clock the test drives (no wall time is measured).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from darkcfg.training import train as T

from test_train import make_cfg, make_data, small_run  # noqa: F401  (a fixture)

LINE = re.compile(r"^ (\d+)/(\d+): ")


def _lines(text):
    """{iteration: line} of the progress lines in ``text``."""
    return {int(m.group(1)): l for l in text.splitlines() if (m := LINE.match(l))}


@pytest.fixture
def clock(monkeypatch):
    """train's log clock reads 7 s per finished iteration."""
    now = [0.0]
    iterate = T._Run.iterate

    def timed(self, batches):
        row = iterate(self, batches)
        now[0] = 7.0 * row["iteration"]
        return row

    monkeypatch.setattr(T._Run, "iterate", timed)
    monkeypatch.setattr(T, "_clock", lambda: now[0])
    monkeypatch.setattr(T, "_run_loop", _without_a_terminal(T._run_loop))
    return now


def _without_a_terminal(run_loop):
    """As under nohup: tqdm finds no terminal (pytest's capture is not one either way)."""
    import tqdm

    def run(*a, **k):
        real = tqdm.tqdm

        class NoTerminal(real):
            def __init__(self, *args, **kw):
                kw["disable"] = True if kw.get("disable") is None else kw["disable"]
                super().__init__(*args, **kw)
        tqdm.tqdm = NoTerminal
        try:
            return run_loop(*a, **k)
        finally:
            tqdm.tqdm = real
    return run


def test_a_line_at_least_every_log_every_seconds(tmp_path, clock, capsys):
    data = make_data(tmp_path, extra="savelast=100\nsaveweights=1000\n")     # no save inside
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=8)
    T.train(data, cfg, log_every=20)
    expected, last = [], 0.0
    for k in range(1, 9):                      # 7 s an iteration, a line once 20 s have passed
        if k == 1 or 7.0 * k - last >= 20:
            expected.append(k)
            last = 7.0 * k
    out = capsys.readouterr().out
    assert sorted(_lines(out)) == expected
    assert out.strip().splitlines()[-1].startswith("done: ")


def test_a_line_at_every_save_and_map_and_resumed_from(small_run, clock, capsys):
    data, cfg, tmp = small_run                   # savelast=2, saveweights=4, max_batches=6

    def stop_at_3(iteration, model):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.train(data, cfg, map=True, map_every=1, log_every=1e9, callback=stop_at_3)
    capsys.readouterr()
    r = T.train(data, cfg, map=True, resume=True, log_every=1e9)
    out = capsys.readouterr().out
    state = tmp / "backup" / "tiny_last.state"
    assert f"resumed from {state} at iteration 3" in out
    lines = _lines(out)
    for k in range(4, 7):
        saves = [f"tiny_{t}.weights" for t in (["last"] if k % 2 == 0 else [])
                 + ([str(k)] if k % 4 == 0 else [])]
        for s in saves:
            assert s in lines.get(k, ""), (k, s, out)
    maps = [(x["iteration"], x["map"]) for x in r.rows if x["map"] is not None]
    assert [k for k, _ in maps if k > 3]                # it evaluated after the resume
    for k, m in maps:
        if k <= 3:
            continue
        best = all(m >= m0 for k0, m0 in maps if k0 < k)
        assert f"mAP@0.50 = {m:.4f}" in lines[k]
        assert ("(new best)" in lines[k]) == best
        assert ("tiny_best.weights" in lines[k]) == best
    assert set(lines) == {4} | {k for k in range(4, 7) if k % 2 == 0} | {k for k, _ in maps
                                                                       if k > 3}


FLUSHED = """
import json, os, sys, torch
torch.set_num_threads({threads})
from darkcfg.training import train as T
from darkcfg.cli import main
seen = {{}}
def look(iteration, model):       # what a reader of the log file has at this moment
    seen[iteration] = open({log!r}).read()
    json.dump(seen, open({marks!r}, "w"))
train = T.train
T.train = lambda *a, **k: train(*a, callback=look, **k)
main(["train", {data!r}, {cfg!r}, "--workers", "0", "--map", "--map-every", "1",
      "--log-every", "1000"], prog_name="darkcfg")
"""


def test_every_line_is_in_the_log_file_as_it_is_printed(small_run):
    data, cfg, tmp = small_run
    log, marks = tmp / "train.log", tmp / "marks.json"
    code = FLUSHED.format(threads=torch.get_num_threads(), log=str(log), marks=str(marks),
                          data=data, cfg=cfg)
    with open(log, "w") as f:
        p = subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.PIPE,
                           text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    seen = {int(k): v for k, v in json.loads(marks.read_text()).items()}
    final = log.read_text()
    for k, text in seen.items():          # each line was in the file by the next callback
        assert set(_lines(text)) == {i for i in _lines(final) if i <= k}
    assert "mAP@0.50 = " in seen[6] and "trained 6 iterations" in final
