"""The pictures a darknet user looks for (issue #23's chart): the training chart written at every
save and saying when mAP was not asked for; map's per-class table and, with --plot, each
class's precision, recall and F1 at the threshold of the best mean F1 beside a confusion
matrix.  The per-class figures are checked against counts worked out by hand.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from matplotlib.figure import Figure

from darkcfg.evaluation import evaluate as E
from darkcfg.evaluation import per_class as PC
from darkcfg.training import train as T

from _helpers import make_cfg, make_data, run_cli


@pytest.fixture
def drawn(monkeypatch):
    """Every text matplotlib puts on a figure saved while the test runs (titles, notes)."""
    texts = []
    real = Figure.savefig

    def savefig(fig, *a, **k):
        texts.append(" | ".join(t.get_text() for ax in fig.axes
                                for t in [ax.title, *ax.texts]))
        return real(fig, *a, **k)
    monkeypatch.setattr(Figure, "savefig", savefig)
    return texts


def test_the_chart_is_written_at_every_save_and_says_map_was_not_asked(tmp_path, drawn):
    data = make_data(tmp_path, ntrain=4, nvalid=2, extra="savelast=2\nsaveweights=100\n")
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=5)
    png = tmp_path / "backup" / "results.png"
    seen = {}

    def look(iteration, model):        # after iteration 2's _last save, before any _N/_final
        if iteration == 3:
            seen["png"] = os.path.exists(png)
    T.train(data, cfg, quiet=True, callback=look)
    assert seen["png"], "no chart after the first _last save"
    assert drawn and "mAP not asked for" in drawn[-1] and "--map" in drawn[-1]
    assert not [n for n in os.listdir(tmp_path / "backup") if n.endswith(".part")]


def test_the_chart_shows_the_evaluations_with_map(tmp_path, drawn):
    data = make_data(tmp_path, ntrain=4, nvalid=2)
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=2)
    r = T.train(data, cfg, quiet=True, map=True, map_every=1)
    best = max(row["map"] for row in r.rows if row.get("map") is not None)
    assert f"mAP@0.5: best {best * 100:.2f} %" in drawn[-1]
    assert "not asked" not in drawn[-1]


def _hand_case():
    """One class, 4 gt; ranked detections 0.9 TP, 0.8 TP, 0.7 FP, 0.3 TP, 0.2 FP."""
    gts = [np.array([[0, 0, 10, 10, 0], [20, 0, 30, 10, 0], [40, 0, 50, 10, 0],
                     [60, 0, 70, 10, 0]], float)]
    dets = [np.array([[0, 0, 10, 10, .9, 0], [20, 0, 30, 10, .8, 0], [80, 80, 90, 90, .7, 0],
                      [40, 0, 50, 10, .3, 0], [80, 0, 90, 10, .2, 0]], float)]
    return E.darknet_map(dets, gts, 1, thresh=0.25, names=["widget"])


def test_best_f1_threshold_by_hand():
    # k detections kept: 1 -> P 1 R .25 F1 .4; 2 -> 1, .5, .667; 3 -> .667, .5, .571;
    # 4 -> .75, .75, .75 (the best: thresholds in [0.2, 0.3)); 5 -> .6, .75, .667
    b = PC.best_f1(_hand_case())
    assert b.thresh == pytest.approx(0.2, abs=0.0015)
    assert (b.precision[0], b.recall[0], b.f1[0]) == pytest.approx((0.75, 0.75, 0.75))


def test_map_class_table_by_hand():
    # above 0.25: 0.9 TP, 0.8 TP, 0.7 FP, 0.3 TP -> TP 3, FP 1, FN 1, P = R = F1 = .75
    text = PC.class_table(_hand_case())
    lines = text.strip().splitlines()
    assert "Id Name" in lines[1] and "TP     FN     FP Precision Recall     F1" in lines[1]
    row = lines[3].split()
    assert row[:2] == ["0", "widget"]
    assert [int(x) for x in row[3:6]] == [3, 1, 1]
    assert [float(x) for x in row[6:]] == [0.75, 0.75, 0.75]


def test_map_prints_the_table_and_plot_draws_per_class_and_confusion(tmp_path, drawn):
    data = make_data(tmp_path, ntrain=2, nvalid=4)
    cfg = make_cfg(tmp_path / "tiny.cfg")
    weights = str(tmp_path / "w.weights")
    assert run_cli("init", cfg, weights).exit_code == 0
    plots = tmp_path / "plots"
    res = run_cli("map", data, cfg, weights, "--quiet", "--plot", plots, "--thresh", "0.001")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    darknet = [l for l in lines if l.startswith("class_id = ")]
    table = lines[lines.index("  -- ----             ------------ ------ ------ ------ "
                              "--------- ------ ------") + 1:][:2]
    gt = {}
    for p in open(tmp_path / "valid.txt").read().split():
        for row in open(p[:-4] + ".txt").read().split("\n"):
            if row.strip():
                gt[int(row.split()[0])] = gt.get(int(row.split()[0]), 0) + 1
    for c, (theirs, ours) in enumerate(zip(darknet, table)):
        tp = int(theirs.split("TP = ")[1].split(",")[0])
        fp = int(theirs.split("FP = ")[1].split(")")[0])
        assert [int(x) for x in ours.split()[3:6]] == [tp, gt.get(c, 0) - tp, fp]
    assert os.path.exists(plots / "per_class.png") and os.path.exists(plots / "confusion.png")
    assert any("best mean F1" in t and "P / R / F1 at conf" in t for t in drawn)
    res = run_cli("map", data, cfg, weights, "--quiet", "--plot", plots)
    assert res.exit_code == 1 and "already exists" in res.output      # --force replaces them


def test_train_map_draws_the_pictures_of_its_best_weights(tmp_path):
    """With --map, each new best writes map --plot's pictures beside _best.weights: the same
    bytes as drawing them afresh from _best.weights."""
    from darkcfg.evaluation import validate as V
    from darkcfg.nn import model as M
    data = make_data(tmp_path, ntrain=4, nvalid=2)
    cfg = make_cfg(tmp_path / "tiny.cfg", max_batches=3)
    r = T.train(data, cfg, quiet=True, map=True, map_every=1)
    folder = r.files["best_plots"]
    assert {"per_class.png", "confusion.png"} <= set(os.listdir(folder))
    model = M.load(r.files["best"], cfg).eval()
    got = V.collect(model, T._valid_paths(data), num_classes=2)
    again = V.write_plots(got, E.darknet_map(got.dets, got.gts, 2), 2, None, tmp_path / "again")
    for path in again:
        with open(path, "rb") as a, open(os.path.join(folder, os.path.basename(path)), "rb") as b:
            assert a.read() == b.read(), os.path.basename(path)
