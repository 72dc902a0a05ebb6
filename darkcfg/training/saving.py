"""What a run writes: <cfg>_<tag>.weights with darknet's ``seen``, the training state beside
_last, results.csv and results.png - and the refusal to write over another run's files or
over the run's own input.  Rank 0 alone writes; the other ranks only know the names.
"""
from __future__ import annotations

import csv
import os

from ..errors import DarkcfgError
from . import chart


CSV_FIELDS = ["iteration", "loss", "avg_loss", "xy", "wh", "iou", "obj", "cls", "lr",
              "images_per_s", "skipped", "map"]


def write_results(rows: list, folder: str, base: str, plot: bool = True,
                  map_every: int | None = None) -> tuple:
    """results.csv and (``plot``) the chart results.png (:mod:`.chart`; ``map_every`` None:
    the run has no --map, and the chart says so).  Atomic."""
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
            chart.plot(rows, png, base, map_every)
    except ImportError:      # matplotlib is optional: the csv carries the same numbers
        png = None
    return csv_path, png



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

    def results(self, rows: list, map_every: int | None = None) -> None:
        """results.csv and the chart results.png at every save (``map_every``: the run's --map
        period, None without --map)."""
        if rows and self.master:
            self.files["csv"], png = write_results(rows, self.folder, self.base, True,
                                                   map_every)
            if png:
                self.files["png"] = png
