"""``darkcfg train``: darknet's detector training (src/detector.c ``train_detector``), in PyTorch,
driven by the cfg's [net] section and a darknet .data file.

The flow is one way: .data + cfg -> batches (darkcfg.data.TrainLoader) -> model -> loss
(darkcfg.yolo) -> one SGD update per iteration -> darknet-named files in the backup folder.

* :func:`learning_rate` is darknet's ``get_current_rate`` (src/network.c), a pure function of the
  cfg and the iteration.  darknet increments ``seen`` before it updates, so update number ``k``
  (1-based; the iteration darknet prints after it) uses ``learning_rate(cfg, k)``.
* The update (src/convolutional_layer.c ``update_convolutional_layer``) equals
  ``torch.optim.SGD(momentum, dampening=0, weight_decay=decay)`` on the MEAN gradient over the
  ``mini*S`` images of an iteration, with decay on conv/connected weights only
  (../shared/design/TRAINING-FACTS.md 1.4 derives it).
* Batch norms train with momentum 0.01 and eps 1e-5: darknet's GPU (cuDNN) training, not its CPU
  path (momentum 0.1, normalising with the unbiased variance).

This module is the run read top to bottom: :func:`train` checks its arguments, ``_train`` sets
the run up and ends it, ``_Run.loop`` is darknet's loop.  Beside it, each named by what it does
(their names are importable from here as before): inputs.py (the .data, the cfg and the loader,
checked before anything is written), start.py (the initialisation, the starting weights, the
optimizer), update.py (one iteration's forward/backward passes and its step), saving.py (the
files a run writes), schedule.py (the learning rate), state.py (the state beside _last,
resume), distributed.py (torchrun's process group), signals.py, ema.py, lint.py.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace

from ..config import cfg as cfgmod
from ..config import shapes
from ..errors import DarkcfgError
from .distributed import (DIST_TIMEOUT, _device, _end_distributed,  # noqa: F401
                          _from_rank0, _init_distributed, _is_comm_error, _reduce_mean,
                          _silent_ranks, restart_count)
from .inputs import (_check_classes, _check_data, _load_cfg, _make_loader,  # noqa: F401
                     _read_data, _run_schedule, _valid_paths, _warn_lint, head_kind)
from .saving import (CSV_FIELDS, RunFiles, _refuse_previous_run,  # noqa: F401
                     _refuse_writing_over, _run_files, write_results)
from .schedule import Schedule, learning_rate, schedule  # noqa: F401
from .start import (BN_MOMENTUM, INITS, _ready_to_train, _starting_model,  # noqa: F401
                    _uniform, darknet_init_, layers_in_file, make_optimizer, param_groups,
                    set_bn_training, start_weights, torch_init_)
from .state import (_first_line, _set_rng_state, _state_fields, finished,  # noqa: F401
                    load_state, save_state, train_on)
from .update import (_autocast, _bn_buffers, _grads_finite, _restore_buffers,  # noqa: F401
                     step)

NAN_LIMIT = 5               # non-finite steps in a row before training stops
LOG_EVERY = 20.0            # without a terminal: seconds between progress lines (--log-every)
_clock = time.monotonic     # the log's clock (a test replaces it)


# ----- the loss and the validation mAP, as the loop asks for them --------------------------------


def compute_loss(outputs, batch, model, assign: str):
    """(loss averaged over the mini-batch, parts) for one forward pass: darkcfg.yolo's
    targets and loss for [yolo] heads, darkcfg.keypoint's for [keypoint] heads."""
    from ..objective import yolo as Y
    size = tuple(batch.size)
    if head_kind(model.net) == "keypoint":
        return _keypoint_loss(outputs, batch, model)
    heads = Y.heads_of(model)
    grids = [tuple(o.shape[-2:]) for o in outputs]
    t = Y.encode_targets(list(batch.boxes), list(batch.classes), heads, grids, size, rule=assign)
    return Y.yolo_loss(outputs, t, heads, size)


def _keypoint_loss(outputs, batch, model):
    from ..objective import keypoint as K
    layers = [l for l in model.net.layers if l.type == "keypoint"]
    targets = []
    for o, layer in zip(outputs, layers):
        grid = tuple(o.shape[-2:])
        pts = [b[:, :2] for b in batch.boxes]
        targets.append(K.encode(pts, list(batch.classes), grid, layer.opts["classes"],
                                layer.opts["sigma"]))
    return K.loss(outputs, targets, layers)


def evaluate(model, paths, num_classes) -> tuple:
    """(validation mAP@0.5 - darknet's detector map - of the model as it is now, ``plot``):
    ``plot(folder)`` draws ``map --plot``'s pictures of this evaluation (per-class AP,
    precision, recall and F1, the confusion matrix, PR curves); None for a [keypoint] model."""
    import torch
    from ..evaluation import evaluate as E
    from ..evaluation import validate as V
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            if V.is_keypoint(model.net):
                return float(V.evaluate_model(model, paths, num_classes=num_classes).map), None
            got = V.collect(model, paths, num_classes=num_classes)
        classes = num_classes or V.model_classes(model)
        r = E.darknet_map(got.dets, got.gts, classes)
        return float(r.map), lambda folder: V.write_plots(got, r, classes, None, folder)
    finally:
        model.train(was)


# ----- the loop ---------------------------------------------------------------------------------


@dataclass
class TrainResult:
    iteration: int                  # the last completed iteration
    files: dict                     # "last", "final", "best", "best_plots" (a folder), "state",
                                    # "csv", "png" -> path
    saved: list                     # every <cfg>_<iteration>.weights written
    best_map: float | None
    skipped: int                    # iterations whose update was skipped (non-finite)
    rows: list                      # the results.csv rows
    seconds: float


class _Log:
    """Progress lines where no bar shows (a log file, nohup): one at the first iteration, at
    every save and mAP evaluation, and whenever ``every`` seconds have passed since the last
    (None: no lines); each flushed, as a log file is read while it grows."""

    def __init__(self, every, first: int):
        self.every, self.first, self.last = every, first, _clock()

    def due(self, iteration: int, eventful: bool) -> bool:
        return self.every is not None and (iteration == self.first or eventful
                                           or _clock() - self.last >= self.every)

    def line(self, run, row) -> None:
        """`` 200/300: 3.41, 3.52 avg loss, 0.005 rate, 270.1 images/s, 0 skipped`` and what
        this iteration evaluated and saved."""
        written = run.out.written
        print(f" {run.iteration}/{run.sched.max_batches}: {row['loss']:f}, "
              f"{run.avg_loss:f} avg loss, {row['lr']:f} rate, "
              f"{row['images_per_s']:.1f} images/s, {run.skipped} skipped"
              + "".join(f"; {n}" for n in run.notes)
              + (f"; saved {', '.join(written)}" if written else ""), flush=True)
        self.last = _clock()


class _Run:
    """One training run: its model, optimizer and counters (:attr:`COUNTERS`, the fields of the
    training state), its files (:class:`RunFiles`).  ``_train`` sets it up; :meth:`loop` runs
    darknet's ``while (iteration < max_batches)``."""

    COUNTERS = ("iteration", "iter_save", "iter_save_last", "next_map", "rows", "best_map",
                "skipped", "avg_loss", "saved", "seed")

    def __init__(self, out: RunFiles, sched, model, opt, net, *, seed, assign, device,
                 nan_limit=NAN_LIMIT, forward=None, amp=None, scaler=None,
                 channels_last=False):
        self.out, self.files = out, out.files
        self.forward = forward if forward is not None else model   # DDP / compiled wrapper
        self.amp, self.scaler, self.channels_last = amp, scaler, channels_last
        self.sched, self.model, self.opt, self.net = sched, model, opt, net
        self.seed, self.assign, self.device, self.nan_limit = seed, assign, device, nan_limit
        self.rows, self.saved, self.notes = [], [], []     # notes: this iteration's mAP, logged
        self.best_map, self.skipped, self.avg_loss, self.bad_run = None, 0, None, 0
        self.iteration = self.iter_save = self.iter_save_last = 0
        self.next_map = self.map_every = self.valid = self.num_classes = None
        self.saveweights, self.savelast = 1000, 100
        self.ema = None            # a WeightEMA with [net] ema_alpha

    # -- files and the state --
    def weights(self, tag: str) -> str:
        """<cfg>_<tag>.weights with darknet's seen = iteration * mini * S."""
        return self.out.weights(self.model, tag, self.iteration * self.sched.images_per_iteration)

    def save_last(self, plot=False) -> None:
        """_last.weights (and _ema.weights), the state beside them, results.csv and the chart
        (``plot`` is kept for callers: the chart is drawn at every save)."""
        self.files["last"] = self.weights("last")
        if not self.out.master:
            self.out.state(self.model, self.opt, {})
            return
        fields = {k: getattr(self, k) for k in self.COUNTERS}
        if self.ema is not None:
            fields["ema"] = self.ema.state_dict()
            if self.ema.initialized:     # darknet: _ema.weights beside every _last
                with self.ema.swapped_in():
                    self.files["ema"] = self.weights("ema")
        if self.scaler is not None:
            fields["scaler"] = self.scaler.state_dict()
        self.out.state(self.model, self.opt, {**fields, "cfg": self.net.cfg.to_text()})
        self.out.results(self.rows, self.map_every)

    def restore(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        for k in self.COUNTERS:
            setattr(self, k, state[k])
        self.rows, self.saved = list(self.rows), list(self.saved)
        _set_rng_state(state["rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state.get("ema"))
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    # -- the loop --
    def loop(self, batches, bar, callback=None, log_every=None) -> None:
        """darknet's loop.  ``log_every``: without a bar (a log file, nohup), the seconds
        between progress lines (see :class:`_Log`); None: no lines."""
        log = _Log(log_every, self.iteration + 1)
        while self.iteration < self.sched.max_batches:
            row = self.iterate(batches)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", avg=f"{self.avg_loss:.3f}",
                            lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.1f}",
                            refresh=False)
            self.out.written, self.notes = [], []
            self.maybe_map(row, bar)
            self.maybe_save()
            if log.due(self.iteration, bool(self.out.written or self.notes)):
                log.line(self, row)
            if callback is not None:
                callback(self.iteration, self.model)

    def iterate(self, batches) -> dict:
        """One update (darknet's train_network): its rate, S passes, the step or its skip."""
        k, t0 = self.iteration + 1, time.time()
        lr = learning_rate(self.sched, k, self.seed)
        for g in self.opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        S = self.sched.subdivisions
        total, parts, ok = step(self.forward, self.opt, (next(batches) for _ in range(S)), S,
                                lambda outs, b: compute_loss(outs, b, self.model, self.assign),
                                self.device, amp=self.amp, scaler=self.scaler,
                                channels_last=self.channels_last)
        self.count_step(k, ok)
        self.iteration = k          # a skipped update still uses up its iteration's batches
        if self.ema is not None:
            self.ema.after_update(k)
        if math.isfinite(total):    # darknet's avg_loss, reset when it is not finite
            prev = self.avg_loss if self.avg_loss is not None and \
                math.isfinite(self.avg_loss) else total
            self.avg_loss = prev * .9 + total * .1
        row = {"iteration": k, "loss": total, "avg_loss": self.avg_loss, **parts, "lr": lr,
               "images_per_s": self.sched.images_per_iteration / max(time.time() - t0, 1e-9),
               "skipped": self.skipped, "map": None}
        self.rows.append(row)
        return row

    def count_step(self, k: int, ok) -> None:
        """Skipped updates: None (the fp16 scaler's) counts, False (not finite) also makes the
        bad run longer - nan_limit of them in a row stop training."""
        if ok is not True:
            self.skipped += 1
        self.bad_run = self.bad_run + 1 if ok is False else 0
        if ok is False and self.bad_run >= self.nan_limit:
            self.stop_non_finite(k)

    def stop_non_finite(self, k):
        """The files on disk predate the bad run (nothing is saved during one): keep them."""
        kept = [f for f in (self.files.get("last"), self.files.get("best")) if f]
        kept += self.saved[-1:]
        raise DarkcfgError(
            f"iteration {k}: loss or gradient not finite {self.bad_run} iterations in a row "
            f"(each update skipped; {self.skipped} skipped in all): training stopped. Last "
            f"good files: {', '.join(kept) or 'none written yet'}. Lower learning_rate or raise "
            f"burn_in in the cfg.")

    def maybe_map(self, row, bar) -> None:
        """darknet's -map: at next_map (max(last + every, burn_in)) and at max_batches.  Rank 0
        evaluates; the others wait for it at the next all-reduce."""
        it = self.iteration
        if self.next_map is None or not (it >= self.next_map or it == self.sched.max_batches):
            return
        if self.out.master:
            self.record_map(row, bar)
        self.next_map = max(it + self.map_every, self.sched.burn_in)

    def record_map(self, row, bar) -> None:
        """The validation mAP into ``row``, said on the bar or the log line; a new best saves
        _best.weights."""
        row["map"], plot = evaluate(self.model, self.valid, self.num_classes)
        best = self.best_map is None or row["map"] >= self.best_map
        text = f"mAP@0.50 = {row['map']:.4f}" + (" (new best)" if best else
                                                f", best = {self.best_map:.4f}")
        if bar is not None and not bar.disable:
            bar.write(f"{self.iteration}: {text}")
        else:                   # on the log's line for this iteration
            self.notes.append(text)
        if best:
            self.best_map = row["map"]
            self.files["best"] = self.weights("best")
            if plot is not None:          # map --plot's pictures of _best.weights
                try:
                    plot(self.out.path("best_map"))
                    self.files["best_plots"] = self.out.path("best_map")
                except ImportError:       # matplotlib is optional
                    pass
            self.out.results(self.rows, self.map_every)

    def maybe_save(self) -> None:
        """darknet's cadence (PR #7932): <cfg>_<N> every saveweights, _last every savelast
        when saveweights > savelast.  Nothing during a run of skipped steps: the files on disk
        stay the last good ones (the model has not moved since)."""
        it = self.iteration
        if self.bad_run:
            return
        if it >= self.iter_save + self.saveweights or it % self.saveweights == 0:
            self.iter_save = it
            self.saved.append(self.weights(str(it)))
            self.out.results(self.rows, self.map_every)
        if self.saveweights > self.savelast and (it >= self.iter_save_last + self.savelast
                                                 or it % self.savelast == 0):
            self.iter_save_last = it
            self.save_last()


# ----- the run, top to bottom -------------------------------------------------------------------


def train(data_path, cfg, weights=None, *, out=None, clear=False, resume=False, freeze=None,
          classes=None, assign="per_scale", map=False, map_every=None, seed=0, workers=0,
          device="cpu", quiet=False, max_batches=None, loader=None, valid_paths=None,
          callback=None, nan_limit=NAN_LIMIT, check_data=True, sync_bn=False, amp=None,
          channels_last=False, compile=False, dist_timeout=DIST_TIMEOUT,
          force=False, init="torch", log_every=LOG_EVERY, lr_scale=1.0,
          multiscale="centred", min_visible=None, crop_aspect=None) -> TrainResult:
    """Train as ``darknet detector train DATA CFG [WEIGHTS]`` does; see the module docstring.

    * ``weights``: a .weights file (full, or a prefix such as darknet53.conv.74: the layers it
      holds load, the rest keep darknet's init) or a darkcfg .pt.  Without ``clear`` its
      ``seen`` places the schedule at ``seen // (mini*S)`` (darknet); with it, at 0.
    * ``resume``: continue exactly from ``<cfg>_last.state`` in the output folder (model,
      optimizer, counters, RNG states); ``weights`` and ``clear`` must not be given.
      ``"auto"``: resume where that state exists, else start from ``weights`` (ignored when
      resuming, as ``clear``); a group torchrun restarted (``--max-restarts``) does so itself.
    * ``force``: start a fresh run even where the folder holds an earlier run's
      ``<cfg>_*.weights``/``_last.state`` (replaced as they come); without it (and without
      ``resume``) such a folder is refused before anything is written.
    * ``classes``: rewrite every head to N classes first (weights of resized layers are skipped).
    * ``assign``: ``per_scale`` (the design notes', the default: it learned 72.9 % mAP@0.5
      against darknet's ``best_of_all`` 56.6 % on issue #22's set, 1000 iterations).
    * ``multiscale``: [yolo] ``random=1``'s sizes, ``centred`` (default; the last 100
      iterations at the cfg's size) or ``darknet``'s one step larger (the last 100 at the
      largest; darkcfg.dataset.augment.network_size).
    * ``min_visible``: the jitter crop drops a box with less than this share of its area
      inside (default 0.1; darknet's rule is 0, keep every box of a pixel or more;
      darkcfg.dataset.augment.Options).
    * ``crop_aspect``: the jitter crop keeps the image's aspect (``"image"``, the default) or
      moves each edge on its own (``"darknet"``; darkcfg.dataset.augment.Options).
    * ``map``: validation mAP@0.5 every ``map_every`` iterations (default darknet's: 4 epochs,
      at least 100) and at the end, on the .data's ``valid`` list; ``_best.weights`` follows it.
    * ``loader``: an iterator of batches to use instead of darkcfg.data's (tests); ``callback``:
      called as ``callback(iteration, model)`` after each iteration.

    * Under ``torchrun`` (WORLD_SIZE in the environment): DistributedDataParallel, gloo on
      CPU, NCCL on CUDA (``device`` cuda -> cuda:LOCAL_RANK); the cfg's batch is the GLOBAL
      batch, each rank reading mini_batch/W images of every forward pass; rank 0 alone writes.
      ``sync_bn``: batch norms over the global forward pass (PyTorch's SyncBatchNorm on
      CUDA, darkcfg.syncbn's on CPU, where PyTorch's refuses CPU tensors); without it each
      rank's batch norms see only its share.
      ``dist_timeout``: seconds a rank waits for the others before it stops with an error.
      ``lr_scale``: the cfg's learning_rate times this (darknet's -gpus N uses N; default 1).
    * ``amp``: "bf16" or "fp16" autocast (fp16 with a grad scaler); ``channels_last``;
      ``compile``: torch.compile of the model's training forward.
    * ``log_every``: without a terminal (no progress bar), a progress line at least every
      this many seconds, and at every save and mAP evaluation; every line flushed.

    Ctrl-C saves ``_last.weights`` and the state, then re-raises KeyboardInterrupt; SIGTERM
    and SIGHUP do the same and raise ``darkcfg.training.signals.Stopped`` (a
    KeyboardInterrupt with ``.signum``).  The signal handlers are those of the caller again
    when it returns.
    """
    o = SimpleNamespace(**locals())     # the arguments, by name, for _train
    t_start = time.time()
    _check_arguments(o)
    rank, world, o.device = _init_distributed(device, dist_timeout)
    o.quiet = quiet or rank > 0
    return _train_in_group(o, rank, world, t_start, dist_timeout)


def _train_in_group(o, rank: int, world: int, t_start: float, dist_timeout: float):
    """:func:`_train`, then the process group torn down (the ranks meet first when the run
    finished); a failed collective names the ranks that did not answer."""
    finished = False
    try:
        result = _train(o, rank, world, t_start)
        finished = True
        return result
    except RuntimeError as e:
        if world > 1 and _is_comm_error(e):
            raise _lost_contact(e, rank, world, dist_timeout) from None
        raise
    finally:
        _end_distributed(world, finished)


def _lost_contact(e, rank: int, world: int, dist_timeout: float) -> DarkcfgError:
    """A collective failed: the error names the ranks that did not answer afterwards."""
    silent = _silent_ranks(rank, world)
    who = f"rank {', '.join(map(str, silent))} (no answer)" if silent else "another rank"
    return DarkcfgError(
        f"rank {rank} of {world}: lost contact with the other ranks ({_first_line(e)}); "
        f"{who} died or stalled for over {dist_timeout:.0f} s: training "
        f"stopped (rank 0's last _last.weights/.state are the newest; --resume continues)")


def _check_arguments(o) -> None:
    """train's arguments checked; a group torchrun restarted resumes ("auto")."""
    if o.init not in INITS:
        raise DarkcfgError(f"--init must be one of {', '.join(INITS)}, got {o.init!r}")
    if o.assign not in ("best_of_all", "per_scale"):
        raise DarkcfgError(f"--assign must be best_of_all or per_scale, got {o.assign!r}")
    from ..dataset.augment import check_choices
    problem = check_choices(o.multiscale, o.min_visible, o.crop_aspect)
    if problem:
        raise DarkcfgError(f"--{problem.replace('_', '-')}")
    if o.resume not in (False, True, "auto"):
        raise DarkcfgError(f"resume must be True, False or 'auto', got {o.resume!r}")
    if restart_count() and not o.resume:
        o.resume = "auto"           # torchrun restarted the group: continue the run
    if o.resume is True and (o.weights is not None or o.clear):
        raise DarkcfgError("--resume continues from the training state: give no WEIGHTS and "
                           "no --clear; " + train_on("backup", "<cfg>"))
    if not (o.lr_scale > 0 and math.isfinite(o.lr_scale)):
        raise DarkcfgError(f"--lr-scale must be a positive number, got {o.lr_scale}")
    if o.amp not in (None, "bf16", "fp16"):
        raise DarkcfgError(f"--amp must be bf16 or fp16, got {o.amp!r}")


def _train(o, rank: int, world: int, t_start: float) -> TrainResult:
    """``o``: train's arguments.  What the run reads, checked; the model it starts from; the
    loop; the final files."""
    import torch
    dc = _read_data(o.data_path)
    src_cfg = _load_cfg(o.cfg)
    cfg_obj = cfgmod.rewrite(src_cfg, classes=o.classes) if o.classes else src_cfg
    net = shapes.infer(cfg_obj)
    num_classes = _check_classes(net, dc, o.data_path, src_cfg.path or "<cfg>")
    sched = _run_schedule(net, o.max_batches, world, o.lr_scale)
    if rank == 0:
        _warn_lint(net)
    if o.check_data and o.loader is None:
        _check_data(o.data_path, cfg_obj, ("train", "valid") if o.map and dc.valid else ("train",))
    out = _output_folder(o, dc, src_cfg, master=rank == 0, world=world)
    torch.manual_seed(o.seed)

    state = load_state(out.path("last.state")) if o.resume else None
    with _state_fields(out.path("last.state") if state is not None else None):
        model, iteration = _starting_model(net, sched, src_cfg, state, o.weights, o.clear,
                                           o.classes, o.seed, o.quiet, o.init)
    model, forward, opt, scaler, dev = _ready_to_train(
        model, sched, o.freeze, o.device, world, o.sync_bn, o.channels_last, o.compile, o.amp)
    run = _Run(out, sched, model, opt, net, seed=o.seed, assign=o.assign, device=dev,
               nan_limit=o.nan_limit, forward=forward, amp=o.amp, scaler=scaler,
               channels_last=o.channels_last)
    _set_up_run(run, dc, cfg_obj, iteration, o.classes)
    if state is not None:
        with _state_fields(out.path("last.state")):
            run.restore(state)
        _say(o, f"resumed from {out.path('last.state')} at iteration {run.iteration}"
                + (f" (torchrun restart {restart_count()})" if restart_count() else ""))
    if run.iteration >= sched.max_batches:
        _say(o, finished(run.iteration, sched.max_batches, out.folder, out.base, o.resume))
        run.files["final"] = run.weights("final")
        return _result(run, t_start)

    loader = o.loader
    if loader is None:
        loader = _make_loader(dc, net, sched, run.seed, run.iteration, o.workers, dev, rank,
                              world, o.multiscale, o.min_visible, o.crop_aspect)
    if o.map:
        _setup_map(run, o.valid_paths or _valid_paths(o.data_path), o.map_every, num_classes,
                   len(getattr(getattr(loader, "samples", None), "paths", ())), state)
    else:
        run.next_map = None      # a resumed --map run continued without --map: no evaluation
    _run_loop(run, loader, o.quiet, o.callback, o.log_every)
    run.files["final"] = run.weights("final")
    run.save_last(plot=True)
    _say(o, f"done: {run.files['final']} ({run.iteration} iterations, {run.skipped} skipped)")
    return _result(run, t_start)


def _say(o, text: str) -> None:
    if not o.quiet:
        print(text, flush=True)


def _output_folder(o, dc, src_cfg, master: bool, world: int = 1) -> RunFiles:
    """The run's folder (--out, else the .data's backup=, else ./backup), made; refused where a
    fresh run would replace another run's files, or where WEIGHTS is one of the run's own.
    ``resume="auto"`` is decided here, by rank 0 for every rank."""
    folder = o.out or (dc.resolve("backup") if dc.backup else "backup")
    os.makedirs(folder, exist_ok=True)
    base = os.path.splitext(os.path.basename(src_cfg.path or "train.cfg"))[0]
    if o.resume == "auto":
        o.resume = bool(_from_rank0(master and os.path.exists(
            os.path.join(folder, f"{base}_last.state")), world))
        if o.resume:
            o.weights, o.clear = None, False        # the state continues the run
        elif restart_count():
            o.force = True      # no state yet: replace what this group's first attempt wrote
    if not o.resume and not o.force:
        _refuse_previous_run(folder, base)
    _refuse_writing_over(o.weights, folder, base)
    return RunFiles(folder, base, master)


def _set_up_run(run, dc, cfg_obj, iteration: int, classes) -> None:
    """The counters at the starting iteration, the EMA, the .data's save cadence, and the
    rewritten cfg beside the weights (--classes: the weights belong to it)."""
    run.iteration = run.iter_save = run.iter_save_last = iteration
    sched = run.sched
    if sched.ema_alpha:
        from .ema import WeightEMA
        run.ema = WeightEMA(run.model, sched.ema_alpha, sched.max_batches)
    run.saveweights = int(dc.options.get("saveweights", 1000 if sched.max_batches < 10000
                                         else 10000))
    run.savelast = int(dc.options.get("savelast", 100))
    if classes:
        run.files["cfg"] = run.out.path("train.cfg")
        if run.out.master:
            cfgmod.save(cfg_obj, run.files["cfg"])


def _result(run, t_start) -> TrainResult:
    return TrainResult(run.iteration, run.files, run.saved, run.best_map, run.skipped, run.rows,
                       time.time() - t_start)


def _setup_map(run, paths, every, num_classes, n_train, state) -> None:
    """darknet's calc_map_for_each: 4 epochs of the train list, at least 100 iterations."""
    run.valid, run.num_classes = paths, num_classes
    n = n_train or len(paths)
    run.map_every = every or max(4 * n // run.sched.images_per_iteration, 100)
    if state is None or run.next_map is None:     # (resumed from a run without --map)
        run.next_map = max(run.iteration + run.map_every, run.sched.burn_in)


def _run_loop(run, loader, quiet, callback, log_every=LOG_EVERY) -> None:
    """The loop under a tqdm bar; Ctrl-C, SIGTERM or SIGHUP saves _last and the state, then
    re-raises (a KeyboardInterrupt; signals.Stopped for a signal).  A second signal during
    that save is ignored; the previous signal handlers are back when this returns."""
    from tqdm import tqdm
    from .signals import stop_on_signals
    bar = tqdm(total=run.sched.max_batches, initial=run.iteration, disable=quiet or None,
               unit="it", dynamic_ncols=True, desc=run.out.base)
    with stop_on_signals() as stop:
        try:     # without a terminal (no bar) darknet-style lines (Run.loop says when)
            run.loop(iter(loader), bar, callback, None if quiet or not bar.disable else log_every)
        except KeyboardInterrupt as e:
            stop.armed = False           # from here on a signal must not cut the save short
            bar.close()
            run.save_last(plot=True)
            if not quiet:
                print(f"{_stopped_by(e)} at iteration {run.iteration}: saved "
                      f"{run.files['last']} and {run.files['state']} (--resume continues)",
                      flush=True)
            raise
        finally:
            bar.close()
            close = getattr(loader, "close", None)
            if close:
                close()


def _stopped_by(e) -> str:
    name = getattr(e, "name", "SIGINT")
    return "interrupted" if name == "SIGINT" else f"stopped by {name}"
