"""Per-class figures beyond darknet's lines: the table the maintained darknet (hank-ai) prints
after ``detector map`` - AP, TP, FN, FP, precision, recall and F1 of each class at
``--thresh`` (without its TN columns: detection has no true negatives) - and, for ``map
--plot``, each class's precision, recall and F1 at the confidence threshold where the mean F1
over the classes is best, beside its AP (``per_class.png``).

All of it is a pure function of a :class:`~darkcfg.evaluation.evaluate.MapResult`: the counts
at ``thresh`` it carries, and its per-class curves (recall, precision, score in rank order).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.linspace(0.0, 1.0, 1001)     # confidence thresholds searched for the best mean F1


def _ratio(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _f1(p, r):
    return _ratio(2 * p * r, p + r)


def class_table(result, names=None) -> str:
    """Per class at ``result.thresh``: AP, TP, FN (its gt not found), FP, precision, recall,
    F1 - the maintained darknet's table, one line a class, counts as darknet's lines count."""
    tp, fp = result.tp.astype(int), result.fp.astype(int)
    fn = np.maximum(result.gt.astype(int) - tp, 0)
    p, r = _ratio(tp, tp + fp), _ratio(tp, result.gt)
    f1 = _f1(p, r)
    out = [f"\n per class at conf_thresh = {result.thresh:.2f}:\n",
           "  Id Name             AvgPrecision     TP     FN     FP Precision Recall     F1\n",
           "  -- ----             ------------ ------ ------ ------ --------- ------ ------\n"]
    for c in range(result.num_classes):
        out.append(f"{c:4d} {result._name(c, names)[:16]:<16} {result.ap[c] * 100:12.4f} "
                   f"{tp[c]:6d} {fn[c]:6d} {fp[c]:6d} {p[c]:9.4f} {r[c]:6.4f} {f1[c]:6.4f}\n")
    return "".join(out)


@dataclass
class BestF1:
    """Each class's precision, recall and F1 at ``thresh``, the confidence where the mean F1
    over the classes with ground truth is highest (``mean_f1`` at every ``GRID`` threshold)."""
    thresh: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    f1_curves: np.ndarray            # (classes, len(GRID))
    mean_f1: np.ndarray              # (len(GRID),)


def best_f1(result) -> BestF1:
    """Precision and recall of class c at threshold t are those of its last ranked detection
    with score > t (none: 0 and 0), from the result's curves."""
    n = result.num_classes
    prec, rec = np.zeros((n, len(GRID))), np.zeros((n, len(GRID)))
    for c, (rc, pr, score) in enumerate(result.curves):
        if len(score) == 0:
            continue
        k = np.searchsorted(-np.asarray(score, float), -GRID, side="left")  # count score > t
        has = k > 0
        prec[c, has], rec[c, has] = pr[k[has] - 1], rc[k[has] - 1]
    f1 = _f1(prec, rec)
    scored = result.gt > 0
    mean = f1[scored].mean(0) if scored.any() else np.zeros(len(GRID))
    i = int(np.argmax(mean))
    return BestF1(float(GRID[i]), prec[:, i], rec[:, i], f1[:, i], f1, mean)


def plot_per_class(result, path: str, names=None) -> str:
    """``per_class.png``: left, F1 against the confidence threshold per class and their mean,
    the best marked; right, each class's AP, and its precision, recall and F1 there."""
    from .evaluate import _pyplot, _save
    plt = _pyplot()
    b = best_f1(result)
    n = result.num_classes
    labels = [result._name(c, names) for c in range(n)]
    fig, (curve, bars) = plt.subplots(1, 2, figsize=(min(24, 9 + 0.5 * n), 4.5),
                                      gridspec_kw={"width_ratios": [1, max(1.2, n / 6)]})
    for c in range(n):
        if result.gt[c] > 0:
            curve.plot(GRID, b.f1_curves[c], lw=0.8, label=labels[c] if n <= 10 else None)
    curve.plot(GRID, b.mean_f1, lw=2.2, color="black", label="mean")
    curve.axvline(b.thresh, color="0.5", ls="--", lw=0.8)
    curve.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold", ylabel="F1",
              title=f"best mean F1 {b.mean_f1.max():.3f} at {b.thresh:.3f}")
    curve.legend(fontsize=7, loc="lower left")
    x = np.arange(n)
    for k, (name, vals) in enumerate((("AP", result.ap), ("precision", b.precision),
                                      ("recall", b.recall), ("F1", b.f1))):
        bars.bar(x + (k - 1.5) * 0.2, vals, 0.2, label=name)
    bars.set_xticks(x, labels, rotation=90 if n > 8 else 0, fontsize=7)
    bars.set(ylim=(0, 1.1), title=f"per class: AP, and P / R / F1 at conf {b.thresh:.3f}\n"
                                   f"mAP@{result.iou_thresh:.2f} = {result.map * 100:.2f} %")
    bars.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
