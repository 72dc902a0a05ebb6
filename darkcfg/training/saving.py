"""What a run writes: <cfg>_<tag>.weights with darknet's ``seen``, the training state beside
_last, results.csv and results.png - and the refusal to write over another run's files or
over the run's own input.  Rank 0 alone writes; the other ranks only know the names.
"""
from __future__ import annotations

import csv
import os

import numpy as np

from ..errors import DarkcfgError


CSV_FIELDS = ["iteration", "loss", "avg_loss", "xy", "wh", "iou", "obj", "cls", "lr",
              "images_per_s", "skipped", "map"]


def write_results(rows: list, folder: str, base: str, plot: bool = True) -> tuple:
    """results.csv and (``plot``) results.png: loss parts, lr, mAP against iteration.  Atomic."""
    from ..outputs import atomic_output
    csv_path = os.path.join(folder, "results.csv")
    fields = CSV_FIELDS + sorted({k for r in rows for k in r} - set(CSV_FIELDS))
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    png = os.path.join(folder, "results.png") if plot else None
    try:
        if png:
            _plot(rows, png, base)
    except ImportError:      # matplotlib is optional: the csv carries the same numbers
        png = None
    return csv_path, png


def _plot(rows, path, base):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from ..outputs import atomic_output
    it = [r["iteration"] for r in rows]
    fig = Figure(figsize=(12, 4))
    ax = fig.subplots(1, 3)
    for k in ("loss", "avg_loss", "xy", "wh", "iou", "obj", "cls"):
        ys = [r.get(k) for r in rows]
        if any(y for y in ys if y is not None):
            ax[0].plot(it, [np.nan if y is None else y for y in ys], label=k)
    ax[0].set_title(f"{base}: loss")
    ax[0].set_yscale("log")
    ax[0].legend(fontsize=7)
    ax[1].plot(it, [r["lr"] for r in rows])
    ax[1].set_title("learning rate")
    m = [(r["iteration"], r["map"]) for r in rows if r.get("map") is not None]
    if m:
        ax[2].plot(*zip(*m), "o-", color="red")
    ax[2].set_title("mAP@0.5")
    for a in ax:
        a.set_xlabel("iteration")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)



def _run_files(folder: str, base: str) -> list:
    """The files a run of ``base`` has left in ``folder``: its ``<cfg>_*.weights`` and state."""
    import glob
    stem = os.path.join(glob.escape(folder), glob.escape(base))
    return sorted(glob.glob(stem + "_*.weights") + glob.glob(stem + "_last.state"))


def _refuse_previous_run(folder: str, base: str) -> None:
    """A fresh run would replace another run's files of the same cfg (its _last/_final/_N
    weights, its state): refuse unless --resume or --force.  (darknet overwrites them.)"""
    found = _run_files(folder, base)
    if found:
        names = ", ".join(os.path.basename(f) for f in found[:3]) + (", ..." if found[3:] else "")
        raise DarkcfgError(f"{folder}: holds an earlier training run of {base} ({names}); "
                           f"nothing was trained: --resume continues it, --force starts over "
                           f"and replaces its files, --out DIR trains into another folder")


def _refuse_writing_over(weights, folder: str, base: str) -> None:
    """WEIGHTS must not be one of the files the run writes (a ``<cfg>_*.weights`` of its
    folder): the first save would replace the input."""
    from ..outputs import same_file
    if isinstance(weights, (str, os.PathLike)) and \
            any(same_file(str(weights), f) for f in _run_files(folder, base)):
        raise DarkcfgError(f"{weights}: is a file this run writes ({base}_*.weights in "
                           f"{folder}): inputs are never modified - --resume continues that "
                           f"run exactly, or copy the file elsewhere first, or train with "
                           f"--out DIR")



class RunFiles:
    """A run's output folder: ``<base>_<tag>.weights`` (darknet's ``seen`` in the header), the
    training state beside _last, results.csv/.png; ``files`` names the newest of each kind
    ("last", "final", "best", "ema", "state", "cfg", "csv", "png"), ``written`` what this
    iteration wrote (for the log line).  Only the ``master`` rank writes; the others only know
    the names."""

    def __init__(self, folder: str, base: str, master: bool = True):
        self.folder, self.base, self.master = folder, base, master
        self.files: dict = {}
        self.written: list = []

    def path(self, suffix: str) -> str:
        return os.path.join(self.folder, f"{self.base}_{suffix}")

    def weights(self, model, tag: str, seen: int) -> str:
        """<base>_<tag>.weights of ``model``, with ``seen`` = iteration * mini * S."""
        from ..files import weights as W
        p = self.path(f"{tag}.weights")
        if self.master:
            W.save_darknet(model, p, W.Header(seen=seen))
            self.written.append(p)
        return p

    def state(self, model, opt, fields: dict) -> str:
        """The training state beside _last: model, optimizer, RNGs and ``fields``."""
        from .state import save_state
        self.files["state"] = p = self.path("last.state")
        if self.master:
            save_state(p, model, opt, fields)
        return p

    def results(self, rows: list, plot: bool = True) -> None:
        """results.csv at every save; results.png (about a second of matplotlib) when ``plot``:
        at the <cfg>_<iteration>, _best and _final saves and on Ctrl-C."""
        if rows and self.master:
            self.files["csv"], png = write_results(rows, self.folder, self.base, plot)
            if png:
                self.files["png"] = png
