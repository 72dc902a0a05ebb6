"""The model a run starts from: darknet's or PyTorch's initialisation, the weights of a
.weights/.pt file (or of the training state), batch norms set to train as darknet's GPU path,
and the optimizer over darknet's two kinds of parameters.
"""
from __future__ import annotations

import math

from ..config import shapes
from ..errors import DarkcfgError
from .schedule import Schedule

BN_MOMENTUM = 0.01          # cudnnBatchNormalizationForwardTraining's exponentialAverageFactor


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



def _ready_to_train(model, sched, freeze, device, world: int, sync_bn=False,
                    channels_last=False, compile=False, amp=None) -> tuple:
    """``model`` frozen where asked, on its device (SyncBN across ranks with ``sync_bn``), its
    batch norms training as darknet's GPU path.  Returns (the model - another object where
    SyncBN replaced its batch norms; forward: the model, DDP-wrapped under torchrun, compiled with
    ``compile``; the optimizer; the fp16 grad scaler or None; the device)."""
    import torch
    from .distributed import _device
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
    return model, forward, opt, scaler, dev
