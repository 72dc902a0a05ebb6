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

Beside it: schedule.py (the learning rate), state.py (the state beside _last, resume),
distributed.py (torchrun's process group); their names are importable from here as before.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..config import cfg as cfgmod
from ..config import shapes
from ..errors import CfgError, DarkcfgError
from .schedule import Schedule, learning_rate, schedule
from .state import _first_line, _set_rng_state, _state_fields, load_state, save_state
from .distributed import (DIST_TIMEOUT, _device, _end_distributed, _init_distributed,
                          _is_comm_error, _reduce_mean)

BN_MOMENTUM = 0.01          # cudnnBatchNormalizationForwardTraining's exponentialAverageFactor
NAN_LIMIT = 5               # non-finite steps in a row before training stops
LOG_EVERY = 20.0            # without a terminal: seconds between progress lines (--log-every)
_clock = time.monotonic     # the log's clock (a test replaces it)


# ----- the model: darknet's init, parameter groups, optimizer -----------------------------------


def torch_init_(model, layers=None, seed: int = 0) -> None:
    """Initialise layers as PyTorch's modules do when made (``reset_parameters``: conv weights
    kaiming-uniform with a=sqrt(5), i.e. U(-b, b) with b = 1/sqrt(fan_in), conv biases
    U(-b, b), BN scale 1 and shift 0), drawn from torch's generator seeded with ``seed`` (the
    global generator's state is left as it was).  darkcfg train's default: see INITS."""
    import torch
    idx = range(len(model.layers)) if layers is None else sorted(layers)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(seed))
        for i in idx:
            for m in model.layers[i].modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()


def darknet_init_(model, layers=None, seed: int = 0) -> None:
    """Initialise layers as darknet's make_convolutional_layer / make_connected_layer do:
    weights ``scale*U(-1,1)`` with ``scale = sqrt(2/(size*size*c/groups))`` (connected:
    ``sqrt(2/inputs)``), biases 0, BN scale 1 and shift 0.  Rolling statistics: mean 0 as
    darknet's calloc, variance 1 (PyTorch's), not darknet's calloc 0 - a variance of 0 makes an
    untrained layer divide by sqrt(1e-5) in eval mode, which darknet only escapes because its
    rolling statistics are never used before training has moved them.  ``layers``: indices to
    initialise (default all)."""
    import torch
    from torch import nn
    gen = torch.Generator().manual_seed(int(seed))
    idx = range(len(model.layers)) if layers is None else sorted(layers)
    with torch.no_grad():
        for i in idx:
            for m in model.layers[i].modules():
                if isinstance(m, nn.Conv2d):
                    fan = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                    _uniform(m.weight, math.sqrt(2.0 / fan), gen)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.Linear):
                    _uniform(m.weight, math.sqrt(2.0 / m.weight.shape[1]), gen)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
                    m.weight.fill_(1)
                    m.bias.zero_()


# How a run initialises the layers its WEIGHTS does not fill.  PyTorch's is the default: on the
# issue #22 set (yolov3-tiny-shaped, 128x128, 1000 iterations) darknet's, whose weights are
# sqrt(2)x larger, cost 18 mAP points in an otherwise identical loop (35.2 % against 53.3 %) -
# behind batch norm a larger weight is a smaller step for the same learning rate.
INITS = {"torch": torch_init_, "darknet": darknet_init_}


def _uniform(t, scale, gen):
    import torch
    t.copy_((torch.rand(t.shape, generator=gen, dtype=torch.float32) * 2 - 1) * scale)


def set_bn_training(model, momentum: float = BN_MOMENTUM, eps: float = 1e-5) -> None:
    """darknet's GPU batch-norm training: running = 0.99*running + 0.01*batch; eps 1e-5."""
    from torch import nn
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum, m.eps = momentum, eps


def param_groups(model, decay: float, adam: bool = False) -> list:
    """Two kinds of parameters, as darknet updates them: conv/connected weights with weight
    decay; biases and BN scales/shifts without (darknet's Adam decays everything).  A layer's
    ``learning_rate=`` option (darknet's learning_rate_scale) gives it its own groups."""
    from torch import nn
    groups: dict = {}
    for i, layer in enumerate(model.layers):
        sec = model.net.layers[i].section
        opt = sec.find("learning_rate")
        lr_scale = float(opt.value) if opt is not None else 1.0
        for m in layer.modules():
            for name, p in m.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                decayed = adam or (name == "weight" and isinstance(m, (nn.Conv2d, nn.Linear)))
                key = (decayed, lr_scale)
                groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": decay if d else 0.0, "lr_scale": sc}
            for (d, sc), ps in sorted(groups.items())]


def make_optimizer(model, sched: Schedule):
    """SGD (momentum, dampening 0, no Nesterov) or, with ``adam=1``, Adam.

    darknet's Adam (adam_update_gpu) uses the un-normalised gradient sum ``Bu*(g + decay*w)``;
    Adam is invariant to the gradient's scale except through eps, so PyTorch's Adam on the mean
    gradient with ``eps/Bu`` and decay on every parameter is the same update."""
    import torch
    groups = param_groups(model, sched.decay, sched.adam)
    if sched.adam:
        return torch.optim.Adam(groups, lr=sched.learning_rate, betas=(sched.B1, sched.B2),
                                eps=sched.eps / sched.images_per_iteration)
    return torch.optim.SGD(groups, lr=sched.learning_rate, momentum=sched.momentum,
                           dampening=0, nesterov=False)


# ----- starting weights ----------------------------------------------------------------------------


def layers_in_file(path: str, net) -> int:
    """How many of ``net``'s layers a .weights file holds: the smallest cutoff whose size
    matches the file exactly (darknet53.conv.74 on yolov3: 74 - layer 74 is a [shortcut] and
    holds nothing, so cutoff 75 reads the same floats).  WeightsError when none does: darknet
    would silently stop at EOF inside a layer."""
    from ..files import weights as W
    header, size = W.read_header(path)
    floats, rest = divmod(size - header.size, 4)
    total = 0
    if floats == 0 and not rest:
        return 0
    for i, layer in enumerate(net.layers):
        total += layer.weights
        if total == floats and not rest:
            return i + 1
        if total > floats:
            break
    raise W.WeightsError(f"{size:,} bytes match no prefix of {net.cfg.name}'s layers (the full "
                         f"network needs {header.size + 4 * W.expected_floats(net):,}): "
                         f"not this cfg's weights?", path)


def start_weights(model, path: str, cfg, classes=None) -> tuple:
    """Copy ``path`` (.weights, full or a prefix like darknet53.conv.74; or darkcfg .pt) into
    ``model`` wherever a tensor's key and shape agree.  Returns (header, loaded layer indices,
    [(layer, reason)] skipped)."""
    from ..nn import model as M
    if str(path).endswith((".pt", ".safetensors")):
        src, report = M.load_weights(path)
    else:
        base = shapes.network(cfg)
        cutoff = layers_in_file(path, base)
        src, report = M.load_weights(path, cfg, cutoff=cutoff if cutoff < len(base.layers)
                                     else None, classes=classes)
        src_layers = cutoff
    own = model.state_dict()
    loaded, skipped = set(), list(report.skipped or [])
    bad = {i for i, _ in skipped}
    for k, v in src.state_dict().items():
        i = int(k.split(".")[1])
        if i in bad or (not str(path).endswith((".pt", ".safetensors")) and i >= src_layers):
            continue
        if k in own and own[k].shape == v.shape:
            own[k].copy_(v)
            loaded.add(i)
        elif k in own:
            skipped.append((i, f"{k}: shape {tuple(v.shape)} in the file, "
                               f"{tuple(own[k].shape)} in the cfg"))
    return report.header, loaded, skipped


# ----- the loss ---------------------------------------------------------------------------------


def head_kind(net) -> str:
    """"yolo" or "keypoint": the heads training has a loss for; CfgError otherwise."""
    kinds = sorted({l.type for l in net.layers if l.head})
    if kinds not in (["yolo"], ["keypoint"]):
        raise CfgError(f"training needs [yolo] or [keypoint] heads (one kind); this cfg has "
                       f"{', '.join(f'[{k}]' for k in kinds) or 'none'}", net.cfg.path)
    return kinds[0]


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


# ----- results ----------------------------------------------------------------------------------

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


# ----- the loop ---------------------------------------------------------------------------------


@dataclass
class TrainResult:
    iteration: int                  # the last completed iteration
    files: dict                     # "last", "final", "best", "state", "csv", "png" -> path
    saved: list                     # every <cfg>_<iteration>.weights written
    best_map: float | None
    skipped: int                    # iterations whose update was skipped (non-finite)
    rows: list                      # the results.csv rows
    seconds: float


def _grads_finite(model) -> bool:
    import torch
    sums = [p.grad.sum() for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(sums).sum())) if sums else True


def _bn_buffers(model) -> list:
    return [b.detach().clone() for b in model.buffers()]


def _restore_buffers(model, saved) -> None:
    import torch
    with torch.no_grad():
        for b, s in zip(model.buffers(), saved):
            b.copy_(s)


def _autocast(device, amp):
    import contextlib
    import torch
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype={"bf16": torch.bfloat16,
                                                            "fp16": torch.float16}[amp])


def step(model, opt, passes, subdivisions: int, loss_fn, device="cpu", *, amp=None,
         scaler=None, channels_last=False) -> tuple:
    """One iteration: forward/backward each of the ``subdivisions`` batches of ``passes``,
    accumulating gradients, then one optimizer step - unless the loss or a gradient is not
    finite, when the step is skipped and the batch-norm statistics are put back.
    ``loss_fn(outputs, batch) -> (loss averaged over the batch, parts)``.
    Returns (loss, parts, stepped), loss and parts averaged over the iteration's images."""
    import contextlib
    import torch
    opt.zero_grad(set_to_none=True)
    buffers = _bn_buffers(model)
    total, parts = 0.0, {}
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    try:
        for s, b in enumerate(passes):
            x = b.images.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            # gradients are all-reduced on the last subdivision only (DDP's no_sync)
            sync = contextlib.nullcontext() if not ddp or s == subdivisions - 1 else \
                model.no_sync()
            with sync:
                with _autocast(device, amp):
                    outs = model(x)
                loss, p = loss_fn([o.float() for o in outs] if amp else outs, b)
                # the loss is the mean over this forward's images (mini/W of them under DDP
                # with W ranks, the rank's share): L_rs = (W/mini) sum_{i in rank r} L_i.
                # darknet's update uses the mean gradient over all mini*S images,
                # (1/(mini*S)) sum_i dL_i = sum_s (1/S) (1/W) sum_r dL_rs: each rank adds
                # loss/S and DDP's all-reduce divides the sum over ranks by W - exactly the
                # mean over the GLOBAL batch (TRAINING-FACTS 1.4: SGD on that mean is
                # darknet's update).  W = 1 without DDP.
                scaled = loss / subdivisions
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total += float(loss.detach()) / subdivisions
            for name, v in p.items():
                parts[name] = parts.get(name, 0.0) + float(v.detach()) / subdivisions
    except BaseException:
        _restore_buffers(model, buffers)     # a half iteration leaves nothing behind
        opt.zero_grad(set_to_none=True)
        raise
    names = sorted(parts)
    total, *vals = _reduce_mean([total] + [parts[n] for n in names], device)
    parts = dict(zip(names, vals))
    if scaler is not None:
        scaler.unscale_(opt)
    if math.isfinite(total) and _grads_finite(model):
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return total, parts, True
    if scaler is not None and math.isfinite(total):
        scaler.step(opt)          # fp16 overflow: the scaler skips and lowers its scale
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return total, parts, None  # skipped, but not a non-finite loss
    _restore_buffers(model, buffers)
    opt.zero_grad(set_to_none=True)
    return total, parts, False


class _Run:
    """One training run: its model, optimizer, counters and files.  :func:`train` sets it up;
    :meth:`loop` runs darknet's ``while (iteration < max_batches)``."""

    def __init__(self, folder, base, sched, model, opt, net, *, seed, assign, device,
                 nan_limit=NAN_LIMIT, forward=None, amp=None, scaler=None,
                 channels_last=False, master=True):
        self.forward = forward if forward is not None else model   # DDP / compiled wrapper
        self.amp, self.scaler, self.channels_last = amp, scaler, channels_last
        self.master = master      # rank 0 (or no DDP): the only rank that writes files
        self.folder, self.base, self.sched = folder, base, sched
        self.model, self.opt, self.net = model, opt, net
        self.seed, self.assign, self.device, self.nan_limit = seed, assign, device, nan_limit
        self.rows, self.saved, self.files = [], [], {}
        self.best_map, self.skipped, self.avg_loss, self.bad_run = None, 0, None, 0
        self.iteration = self.iter_save = self.iter_save_last = 0
        self.next_map = self.map_every = self.valid = self.num_classes = None
        self.saveweights, self.savelast = 1000, 100
        self.ema = None            # a WeightEMA with [net] ema_alpha
        self.written, self.notes = [], []   # this iteration's saved files and mAP, for the log

    # -- files --
    def weights(self, tag: str) -> str:
        """<cfg>_<tag>.weights with darknet's seen = iteration * mini * S."""
        from ..files import weights as W
        p = os.path.join(self.folder, f"{self.base}_{tag}.weights")
        if not self.master:
            return p
        W.save_darknet(self.model, p,
                       W.Header(seen=self.iteration * self.sched.images_per_iteration))
        self.written.append(p)
        return p

    COUNTERS = ("iteration", "iter_save", "iter_save_last", "next_map", "rows", "best_map",
                "skipped", "avg_loss", "saved", "seed")

    def save_last(self, plot=False) -> None:
        self.files["last"] = self.weights("last")
        self.files["state"] = os.path.join(self.folder, f"{self.base}_last.state")
        if not self.master:
            return
        run = {k: getattr(self, k) for k in self.COUNTERS}
        if self.ema is not None:
            run["ema"] = self.ema.state_dict()
            if self.ema.initialized:     # darknet: _ema.weights beside every _last
                with self.ema.swapped_in():
                    self.files["ema"] = self.weights("ema")
        if self.scaler is not None:
            run["scaler"] = self.scaler.state_dict()
        save_state(self.files["state"], self.model, self.opt,
                   {**run, "cfg": self.net.cfg.to_text()})
        self.results(plot)

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

    def results(self, plot=True) -> None:
        """results.csv at every save; results.png (about a second of matplotlib) at the
        <cfg>_<iteration>, _best and _final saves and on Ctrl-C."""
        if self.rows and self.master:
            self.files["csv"], png = write_results(self.rows, self.folder, self.base, plot)
            if png:
                self.files["png"] = png

    # -- the loop --
    def loop(self, batches, bar, callback=None, log_every=None) -> None:
        """darknet's loop.  ``log_every``: without a bar (a log file, nohup), a darknet-style
        line at the first iteration, at every save and mAP evaluation, and whenever
        ``log_every`` seconds have passed since the last line; None: no lines."""
        first, last_line = self.iteration + 1, _clock()
        while self.iteration < self.sched.max_batches:
            row = self.iterate(batches)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", avg=f"{self.avg_loss:.3f}",
                            lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.1f}",
                            refresh=False)
            self.written, self.notes = [], []
            self.maybe_map(row, bar)
            self.maybe_save()
            if log_every is not None and (self.iteration == first or self.written or
                                          self.notes or _clock() - last_line >= log_every):
                self.log_line(row)
                last_line = _clock()
            if callback is not None:
                callback(self.iteration, self.model)

    def log_line(self, row) -> None:
        """`` 200/300: 3.41, 3.52 avg loss, 0.005 rate, 270.1 images/s, 0 skipped`` and what
        this iteration evaluated and saved; flushed (a log file is read while it grows)."""
        print(f" {self.iteration}/{self.sched.max_batches}: {row['loss']:f}, "
              f"{self.avg_loss:f} avg loss, {row['lr']:f} rate, "
              f"{row['images_per_s']:.1f} images/s, {self.skipped} skipped"
              + "".join(f"; {n}" for n in self.notes)
              + (f"; saved {', '.join(self.written)}" if self.written else ""), flush=True)

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
        if ok is None:              # fp16 overflow: the grad scaler skipped the update
            self.skipped += 1
        self.bad_run = 0 if ok or ok is None else self.bad_run + 1
        if ok is False:
            self.skipped += 1
            if self.bad_run >= self.nan_limit:
                self.stop_non_finite(k)
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
        """darknet's -map: at next_map (max(last + every, burn_in)) and at max_batches."""
        it = self.iteration
        if self.next_map is None or not (it >= self.next_map or it == self.sched.max_batches):
            return
        if not self.master:     # rank 0 evaluates; the others wait at the next all-reduce
            self.next_map = max(it + self.map_every, self.sched.burn_in)
            return
        row["map"] = evaluate(self.model, self.valid, self.num_classes)
        best = self.best_map is None or row["map"] >= self.best_map
        text = f"mAP@0.50 = {row['map']:.4f}" + (" (new best)" if best else
                                                f", best = {self.best_map:.4f}")
        if bar is not None and not bar.disable:
            bar.write(f"{it}: {text}")
        else:                   # on the log's line for this iteration
            self.notes.append(text)
        if best:
            self.best_map = row["map"]
            self.files["best"] = self.weights("best")
            self.results()
        self.next_map = max(it + self.map_every, self.sched.burn_in)

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
            self.results()
        if self.saveweights > self.savelast and (it >= self.iter_save_last + self.savelast
                                                 or it % self.savelast == 0):
            self.iter_save_last = it
            self.save_last()


def _read_data(data_path):
    from ..dataset import data as D
    return D.read_data(data_path)


def _check_data(data_path, cfg_obj, splits) -> None:
    from ..dataset import data as D
    report = D.check(data_path, cfg_obj, splits=splits)
    if not report.ok:
        raise DarkcfgError(f"{data_path}: the data set has problems; nothing was trained:\n"
                           + report.format(limit=20))


def _warn_lint(net) -> None:
    """The cfg's suspicious training options (darkcfg.training.lint), on stderr."""
    import sys
    from .lint import lint
    for w in lint(net):
        print(f"warning: {w}", file=sys.stderr, flush=True)


def _make_loader(dc, net, sched, seed, start, workers, device, rank=0, world_size=1):
    from ..dataset import data as D
    if dc.train is None:
        raise DarkcfgError(f"{dc.path}: no train= list")
    paths = D.image_list(dc.resolve("train"))
    return D.TrainLoader(paths, net, mini_batch=sched.mini_batch,
                         subdivisions=sched.subdivisions, seed=seed, start_iteration=start,
                         workers=workers, pin_memory=str(device).startswith("cuda"),
                         rank=rank, world_size=world_size,
                         max_batches=sched.max_batches)


def evaluate(model, paths, num_classes) -> float:
    """Validation mAP@0.5 (darknet's detector map) of the model as it is now."""
    import torch
    from ..evaluation import validate as V
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(V.evaluate_model(model, paths, num_classes=num_classes).map)
    finally:
        model.train(was)


def _valid_paths(data_path) -> list:
    """The .data's valid list (its train list when there is none), as darknet's -map uses."""
    from ..dataset import data as D
    dc = _read_data(data_path)
    return D.image_list(dc.resolve("valid") or dc.resolve("train"))


def _load_cfg(cfg):
    if isinstance(cfg, cfgmod.Cfg):
        return cfg
    if isinstance(cfg, shapes.Network):
        return cfg.cfg
    return cfgmod.parse(cfg) if "\n" in str(cfg) else cfgmod.load(str(cfg))


def _check_classes(net, dc, data_path, cfg_name) -> int:
    head_kind(net)
    heads = {l.opts["classes"] for l in net.heads}
    if len(heads) > 1:
        raise CfgError(f"the heads disagree on classes ({sorted(heads)}): pass --classes N "
                       f"to rewrite them all", cfg_name)
    (hc,) = heads
    if dc.classes is not None and dc.classes != hc:
        raise DarkcfgError(
            f"{cfg_name}: the cfg's heads have classes={hc} but {data_path} says "
            f"classes={dc.classes}: pass --classes {dc.classes} (rewrites every head and the "
            f"filters of the conv feeding it, as on the other commands) or fix the cfg")
    return hc


def train(data_path, cfg, weights=None, *, out=None, clear=False, resume=False, freeze=None,
          classes=None, assign="per_scale", map=False, map_every=None, seed=0, workers=0,
          device="cpu", quiet=False, max_batches=None, loader=None, valid_paths=None,
          callback=None, nan_limit=NAN_LIMIT, check_data=True, sync_bn=False, amp=None,
          channels_last=False, compile=False, dist_timeout=DIST_TIMEOUT,
          force=False, init="torch", log_every=LOG_EVERY) -> TrainResult:
    """Train as ``darknet detector train DATA CFG [WEIGHTS]`` does; see the module docstring.

    * ``weights``: a .weights file (full, or a prefix such as darknet53.conv.74: the layers it
      holds load, the rest keep darknet's init) or a darkcfg .pt.  Without ``clear`` its
      ``seen`` places the schedule at ``seen // (mini*S)`` (darknet); with it, at 0.
    * ``resume``: continue exactly from ``<cfg>_last.state`` in the output folder (model,
      optimizer, counters, RNG states); ``weights`` and ``clear`` must not be given.
    * ``force``: start a fresh run even where the folder holds an earlier run's
      ``<cfg>_*.weights``/``_last.state`` (replaced as they come); without it (and without
      ``resume``) such a folder is refused before anything is written.
    * ``classes``: rewrite every head to N classes first (weights of resized layers are skipped).
    * ``assign``: ``per_scale`` (the design notes', the default: it learned 72.9 % mAP@0.5
      against darknet's ``best_of_all`` 56.6 % on issue #22's set, 1000 iterations).
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
    * ``amp``: "bf16" or "fp16" autocast (fp16 with a grad scaler); ``channels_last``;
      ``compile``: torch.compile of the model's training forward.
    * ``log_every``: without a terminal (no progress bar), a progress line at least every
      this many seconds, and at every save and mAP evaluation; every line flushed.

    Ctrl-C saves ``_last.weights`` and the state, then re-raises KeyboardInterrupt; SIGTERM
    and SIGHUP do the same and raise ``darkcfg.training.signals.Stopped`` (a
    KeyboardInterrupt with ``.signum``).  The signal handlers are those of the caller again
    when it returns.
    """
    t_start = time.time()
    if init not in INITS:
        raise DarkcfgError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    if assign not in ("best_of_all", "per_scale"):
        raise DarkcfgError(f"--assign must be best_of_all or per_scale, got {assign!r}")
    if resume and (weights is not None or clear):
        raise DarkcfgError("--resume continues from the training state: give no WEIGHTS and "
                           "no --clear")
    if amp not in (None, "bf16", "fp16"):
        raise DarkcfgError(f"--amp must be bf16 or fp16, got {amp!r}")
    rank, world, device = _init_distributed(device, dist_timeout)
    try:
        return _train(data_path, cfg, weights, out, clear, resume, freeze, classes, assign,
                      map, map_every, seed, workers, device, quiet or rank > 0, max_batches,
                      loader, valid_paths, callback, nan_limit, check_data, sync_bn, amp,
                      channels_last, compile, rank, world, dist_timeout, t_start, force, init,
                      log_every=log_every)
    except RuntimeError as e:
        if world > 1 and _is_comm_error(e):
            raise DarkcfgError(
                f"rank {rank} of {world}: lost contact with the other ranks ({_first_line(e)}); "
                f"another rank died or stalled for over {dist_timeout:.0f} s: training "
                f"stopped (rank 0's last _last.weights/.state are the newest; --resume "
                f"continues)") from None
        raise
    finally:
        _end_distributed(world)



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


def _train(data_path, cfg, weights, out, clear, resume, freeze, classes, assign, map,
           map_every, seed, workers, device, quiet, max_batches, loader, valid_paths,
           callback, nan_limit, check_data, sync_bn, amp, channels_last, compile, rank,
           world, dist_timeout, t_start, force, init="torch", log_every=LOG_EVERY):
    import torch
    dc = _read_data(data_path)
    src_cfg = _load_cfg(cfg)
    cfg_obj = cfgmod.rewrite(src_cfg, classes=classes) if classes else src_cfg
    net = shapes.infer(cfg_obj)
    num_classes = _check_classes(net, dc, data_path, src_cfg.path or "<cfg>")
    sched = schedule(net)
    if max_batches is not None:
        if not net.cfg.net.has("sgdr_cycle"):
            sched.sgdr_cycle = max_batches
        sched.max_batches = max_batches
    if sched.images_per_iteration < 2:
        raise net.cfg.net.error(f"batch={sched.batch} subdivisions={sched.subdivisions} trains "
                                f"on one image per iteration (darknet refuses it too): set e.g. "
                                f"batch=64 subdivisions=16", "batch")
    if sched.mini_batch % world:
        raise net.cfg.net.error(
            f"batch={sched.batch} subdivisions={sched.subdivisions}: the forward pass of "
            f"{sched.mini_batch} images does not split over {world} ranks: make "
            f"batch/subdivisions a multiple of {world}", "batch")
    if rank == 0:
        _warn_lint(net)
    if check_data and loader is None:
        _check_data(data_path, cfg_obj, ("train", "valid") if map and dc.valid else ("train",))
    folder = out or (dc.resolve("backup") if dc.backup else "backup")
    os.makedirs(folder, exist_ok=True)
    base = os.path.splitext(os.path.basename(src_cfg.path or "train.cfg"))[0]
    if not resume and not force:
        _refuse_previous_run(folder, base)
    _refuse_writing_over(weights, folder, base)
    torch.manual_seed(seed)

    state_path = os.path.join(folder, f"{base}_last.state")
    state = load_state(state_path) if resume else None
    with _state_fields(state_path if state is not None else None):
        model, iteration = _starting_model(net, sched, src_cfg, state, weights, clear, classes,
                                           seed, quiet, init)
        seed = int(state["seed"]) if state is not None else seed
    if freeze:
        model.freeze(freeze)
    dev = _device(device)
    if sync_bn and world > 1:
        from ..nn import syncbn
        model = syncbn.convert(model, dev)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    set_bn_training(model)
    model.train()
    opt = make_optimizer(model, sched)
    forward = model
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if compile:
        forward = torch.compile(forward)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    run = _Run(folder, base, sched, model, opt, net, seed=seed, assign=assign, device=dev,
               nan_limit=nan_limit, forward=forward, amp=amp, scaler=scaler,
               channels_last=channels_last, master=rank == 0)
    run.iteration = run.iter_save = run.iter_save_last = iteration
    if sched.ema_alpha:
        from .ema import WeightEMA
        run.ema = WeightEMA(model, sched.ema_alpha, sched.max_batches)
    run.saveweights = int(dc.options.get("saveweights", 1000 if sched.max_batches < 10000
                                         else 10000))
    run.savelast = int(dc.options.get("savelast", 100))
    if classes:        # the weights belong to the rewritten cfg: keep it beside them
        run.files["cfg"] = os.path.join(folder, f"{base}_train.cfg")
        if rank == 0:
            cfgmod.save(cfg_obj, run.files["cfg"])
    if state is not None:
        with _state_fields(state_path):
            run.restore(state)
        if not quiet:
            print(f"resumed from {state_path} at iteration {run.iteration}", flush=True)
    if run.iteration >= sched.max_batches:
        if not quiet:
            print(f"iteration {run.iteration} >= max_batches {sched.max_batches}: nothing to "
                  f"train (use --clear to train from the beginning)", flush=True)
        run.files["final"] = run.weights("final")
        return _result(run, t_start)
    if loader is None:
        loader = _make_loader(dc, net, sched, run.seed, run.iteration, workers, dev, rank, world)
    if not map:
        run.next_map = None      # a resumed --map run continued without --map: no evaluation
    if map:
        _setup_map(run, valid_paths or _valid_paths(data_path), map_every, num_classes,
                   len(getattr(getattr(loader, "samples", None), "paths", ())), state)
    _run_loop(run, loader, quiet, callback, log_every)
    run.files["final"] = run.weights("final")
    run.save_last(plot=True)
    if not quiet:
        print(f"done: {run.files['final']} ({run.iteration} iterations, {run.skipped} skipped)",
              flush=True)
    return _result(run, t_start)


def _starting_model(net, sched, src_cfg, state, weights, clear, classes, seed, quiet,
                    init="torch"):
    """(model initialised by INITS[init], then the state's or the file's tensors; start
    iteration)."""
    from ..nn import model as M
    with M.gc_paused():
        model = M.Darknet(net)
    INITS[init](model, seed=seed)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:          # torch's first line says nothing: keep the detail
            detail = "; ".join(x.strip() for x in str(e).splitlines()[1:4] if x.strip())
            raise DarkcfgError(f"the training state does not fit {src_cfg.path} (was the cfg "
                               f"changed since?): {detail[:400]}") from None
        return model, int(state["iteration"])
    if weights is None:
        return model, 0
    header, loaded, skipped = start_weights(model, weights, src_cfg, classes)
    if not quiet:
        print(f"{weights}: loaded {len(loaded)} layers, seen {header.seen:,}"
              + (f"; {len(skipped)} layers kept their initialisation (shapes differ)"
                 if skipped else ""), flush=True)
    return model, 0 if clear else header.seen // sched.images_per_iteration


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
               unit="it", dynamic_ncols=True, desc=run.base)
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
