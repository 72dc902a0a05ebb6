"""The training chart, darknet's chart.png in darkcfg's files: ``results.png`` beside the weights,
drawn from the results.csv rows at every save (matplotlib's Agg canvas, written atomically).

Three panels against the iteration: the loss (each iteration's, darknet's avg loss and the loss
parts, log scale), the learning rate, and mAP@0.5 at each ``--map`` evaluation with the best
marked.  A run without ``--map`` says so on the mAP panel instead of leaving it blank.
"""
from __future__ import annotations

import numpy as np

LOSSES = ("loss", "avg_loss", "xy", "wh", "iou", "obj", "cls")


def plot(rows: list, path: str, base: str, map_every: int | None = None) -> str:
    """Draw ``rows`` (results.csv's, as dicts) into ``path`` (PNG, atomically).  ``map_every``:
    the iterations between mAP evaluations, None when mAP was not asked for."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from ..outputs import atomic_output
    fig = Figure(figsize=(13, 4))
    loss, lr, mean_ap = fig.subplots(1, 3)
    it = [r["iteration"] for r in rows]
    _losses(loss, it, rows, base)
    lr.plot(it, [r["lr"] for r in rows], color="tab:green")
    lr.set_title("learning rate")
    _map(mean_ap, rows, map_every, it[-1] if it else 0)
    for ax in (loss, lr, mean_ap):
        ax.set_xlabel("iteration")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path


def _losses(ax, it, rows, base) -> None:
    for k in LOSSES:
        ys = [r.get(k) for r in rows]
        if any(y for y in ys if y is not None):
            ax.plot(it, [np.nan if y is None else y for y in ys], label=k,
                    lw=1.6 if k == "avg_loss" else 0.8)
    last = rows[-1].get("avg_loss") if rows else None
    ax.set_title(f"{base}: loss" + (f" (avg {last:.3f})" if last is not None else ""))
    ax.set_yscale("log")
    ax.legend(fontsize=7)


def _map(ax, rows, map_every, last_iteration) -> None:
    """mAP@0.5 at each evaluation, the best circled; or why there is none."""
    points = [(r["iteration"], r["map"]) for r in rows if r.get("map") is not None]
    ax.set_title("mAP@0.5")
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, [y * 100 for y in ys], "o-", color="tab:red")
        k = int(np.argmax(ys))
        ax.plot([xs[k]], [ys[k] * 100], "o", ms=12, mfc="none", color="black")
        ax.set_title(f"mAP@0.5: best {ys[k] * 100:.2f} % at {xs[k]}")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        return
    why = ("mAP not asked for:\ntrain with --map (darknet's -map)\nto evaluate the valid list"
           if map_every is None else
           f"no evaluation yet:\nevery {map_every} iterations\n(iteration {last_iteration} now)")
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=10,
            color="0.35")
    ax.set_xlim(0, max(last_iteration, 1))
    ax.set_yticks([])
