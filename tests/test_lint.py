"""The cfg's training options darknet accepts without a word but that spoil a run
(darkcfg.training.lint): each row a real mistake, the warning expected at the line the test
finds in the cfg text it wrote; train prints them before its first step, data check with them.
"""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from darkcfg import cli
from darkcfg.training import train as T

from test_train import make_cfg, make_data


def lint(cfg) -> list:
    from darkcfg.training.lint import lint as cfg_lint
    return cfg_lint(cfg)

CLEAN = dict(burn_in=3, max_batches=6, steps="2,4", batch=4, subdivisions=2)


def _line(path, key, nth=1) -> int:
    """The line number of the nth ``key=`` line of a cfg."""
    found = [i for i, l in enumerate(open(path).read().splitlines(), 1)
             if l.replace(" ", "").startswith(key + "=")]
    return found[nth - 1]


def test_a_clean_cfg_has_no_warnings(tmp_path):
    assert lint(make_cfg(tmp_path / "ok.cfg", **CLEAN)) == []


@pytest.mark.parametrize("opts,key,words", [
    (dict(burn_in=1000, max_batches=200), "burn_in", ["1000", "200"]),
    (dict(burn_in=6, max_batches=6), "burn_in", ["6"]),
    (dict(steps="4,400"), "steps", ["400", "max_batches=6"]),
    (dict(steps="4,2"), "steps", ["not increasing", "2 after 4"]),
    (dict(batch=10, subdivisions=3), "batch", ["batch=10", "subdivisions=3", "9 images"]),
])
def test_net_options_that_spoil_a_run(tmp_path, opts, key, words):
    cfg = make_cfg(tmp_path / "bad.cfg", **{**CLEAN, **opts})
    warns = [w for w in lint(cfg) if f"option '{key}'" in w]
    assert len(warns) == 1, lint(cfg)
    assert warns[0].startswith(f"{cfg}:{_line(cfg, key)}: [net]")
    assert all(w in warns[0] for w in words), warns[0]


def test_steps_policy_only(tmp_path):
    cfg = make_cfg(tmp_path / "c.cfg", **{**CLEAN, "policy": "constant", "steps": "400"})
    assert lint(cfg) == []


HEAD = """[net]
batch=4
subdivisions=2
width={width}
height=64
channels=3
max_batches=10
burn_in=2

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors={anchors}
classes=2
num=3
random={random}
"""


@pytest.mark.parametrize("width,anchors,random,key", [
    (80, "10,10, 20,20, 30,30", 1, "width"),          # 80 = 2.5 x 32, random=1
    (80, "10,10, 20,20, 30,30", 0, None),             # no resizing: no warning
    (64, "10,10, 20,20, 30,30, 40,40", 0, "anchors"),  # 4 pairs for num=3
    (64, "10,10, 20,20, 30", 0, "anchors"),            # an odd count
])
def test_head_options_that_spoil_a_run(tmp_path, width, anchors, random, key):
    cfg = tmp_path / "head.cfg"
    cfg.write_text(HEAD.format(width=width, anchors=anchors, random=random))
    warns = lint(str(cfg))
    if key is None:
        assert warns == []
        return
    assert len(warns) == 1 and f"option '{key}'" in warns[0], warns
    assert warns[0].startswith(f"{cfg}:{_line(cfg, key)}:")


def test_train_warns_before_its_first_step_and_data_check_too(tmp_path, capsys):
    data = make_data(tmp_path, ntrain=8, nvalid=4)
    cfg = make_cfg(tmp_path / "tiny.cfg", **{**CLEAN, "burn_in": 1000, "max_batches": 2})
    where = f"{cfg}:{_line(cfg, 'burn_in')}:"
    before = []
    T.train(data, cfg, quiet=True, callback=lambda i, m: before.append(capsys.readouterr().err)
            if i == 1 else None)
    assert where in before[0] and "burn_in=1000 >= max_batches=2" in before[0]
    res = CliRunner().invoke(cli.main, ["data", "check", data, "--cfg", cfg, "--no-decode"])
    assert res.exit_code == 0, res.output
    assert where in res.output and "burn_in=1000" in res.output
