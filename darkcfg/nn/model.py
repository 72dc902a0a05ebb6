"""Registry of section builders and the Darknet nn.Module with one generic forward loop.

Each builder takes a shapes.Layer (options already read, checked and resolved) and returns the
module for it; relative layer references were resolved to absolute indices by shapes.infer, so
``forward`` is a single loop with no type checks that keeps only outputs later layers read.
New section types register themselves with ``@register("name")``.
"""
from __future__ import annotations

import gc
import os
from contextlib import contextmanager

import torch
from torch import nn

from ..config import cfg as cfgmod
from . import layers as L
from ..config import shapes
from ..errors import CfgError, DarkcfgError

BUILDERS: dict = {}
register = shapes.registrar(BUILDERS)


@register("convolutional")
def _conv(l, built):
    owner = built[l.opts["share"]] if l.opts["share"] is not None else None
    return L.ConvBNAct(l.input[2], l.opts, owner)


register("connected")(lambda l, built: L.Connected(l.input[0] * l.input[1] * l.input[2]
                                                   if l.input[2] else _flat_inputs(l), l.opts))
register("local")(lambda l, built: L.Local(l.input[2], l.opts, (l.output[1], l.output[0])))
register("implicit")(lambda l, built: L.Implicit(l.opts))
register("batchnorm")(lambda l, built: L.BatchNorm(l.input[2]))
register("maxpool")(lambda l, built: L.MaxPool(l.opts, l.output[2]))
register("local_avgpool")(lambda l, built: L.LocalAvgPool(l.opts))
register("avgpool")(lambda l, built: L.GlobalAvgPool())
register("upsample")(lambda l, built: L.Upsample(l.opts))
register("reorg3d")(lambda l, built: L.Reorg3d(l.opts))
register("reorg")(lambda l, built: L.Reorg(l.opts))
register("route")(lambda l, built: L.Route(l.opts))
register("shortcut")(lambda l, built: L.Shortcut(l.input[2], l.opts, len(l.sources) - 1))
register("scale_channels", "sam")(lambda l, built: L.Product(l.opts))
register("activation")(lambda l, built: L.Activation(l.opts))
def _tree(l):
    """The softmax tree a [softmax]/[region] tree= names (yolo9000's 9k.tree), or None."""
    if not l.opts.get("tree"):
        return None
    tree = shapes.load_tree(l)
    want = l.opts["classes"] if l.type == "region" else l.outputs
    if tree.n > want:   # darknet's softmax_tree would run past the class entries
        raise l.error(f"the softmax tree {tree.path} has {tree.n} nodes, more than the "
                      f"{want} {'classes' if l.type == 'region' else 'inputs'}", "tree")
    return tree


register("softmax")(lambda l, built: L.Softmax(l.opts, _tree(l)))
register("region")(lambda l, built: L.Region(l.opts, _tree(l)))
register("normalization")(lambda l, built: L.LRN(l.opts))
register("crop")(lambda l, built: L.Crop(l.opts))
register("dropout", "empty", "cost", "contrastive")(lambda l, built: L.Identity())
register("yolo")(lambda l, built: L.Yolo(l.opts))
register("gaussian_yolo")(lambda l, built: L.GaussianYolo(l.opts))
register("detection")(lambda l, built: L.Detection(l.opts))
register("crnn")(lambda l, built: L.CRNN(l.input[2], l.opts, f"layer {l.index} [crnn]"))
register("keypoint")(lambda l, built: L.KeypointHead(l.input[2], l.opts))


def _flat_inputs(l):
    """A [connected] right after [net] with inputs= and no image shape."""
    return l.input[0] * l.input[1] * l.input[2] or l.section.get_int("inputs", 0) or 1


@contextmanager
def gc_paused():
    """Pause Python's cycle collector while a model is built or loaded: the thousands of
    objects a build allocates trigger a full collection over everything torch's import
    left behind (~0.07 s of a 0.2 s yolov3 load).  Building makes no cycles worth collecting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Darknet(nn.Module):
    """A darknet network as a PyTorch module.

    ``forward(x)`` returns a list with one tensor per output head ([yolo], [Gaussian_yolo],
    [region], [detection], in cfg order; the last layer's output when there is none): the raw
    (B, C, H, W) tensor entering that head.  ``trace(x)`` returns every layer's output as darknet
    holds it in ``l.output``.  state_dict keys are ``layers.<index>.<conv|bn|fc|...>.*``.

    A loaded model remembers its source: ``header`` (the darknet header, a weights.Header) and
    ``weights_cfg`` (the text of the cfg whose layer order the source .weights followed, None
    for the model's own), which save_pt/save_darknet write back.
    """
    header = None
    weights_cfg: str | None = None

    @gc_paused()
    def __init__(self, net: shapes.Network):
        super().__init__()
        self.net = net
        built: list = []
        for l in net.layers:
            try:
                built.append(BUILDERS[l.type](l, built))
            except KeyError:
                raise l.error(f"[{l.section.header}] cannot be built") from None
        self.layers = nn.ModuleList(built)
        self.sources = [list(l.sources) for l in net.layers]
        heads = [l.index for l in net.layers if l.head]
        self.head_inputs = [i if net.layers[i].emits else self.sources[i][0]
                            for i in heads] or [len(net.layers) - 1]
        read = {s for src in self.sources for s in src}
        read_later = {s for i, src in enumerate(self.sources) for s in src if s != i - 1}
        self._keep = read_later | set(self.head_inputs)
        # forward() skips the heads' own in-place transforms unless a later layer reads them
        self._run = [i for i in range(len(net.layers))
                     if i not in heads or i in read or net.layers[i].emits]
        self.eval()

    def placement(self) -> dict:
        """``device=`` and ``dtype=`` of the parameters: where an input for this model goes."""
        p = next(self.parameters(), None)
        return {"device": p.device, "dtype": p.dtype} if p is not None else {}

    @property
    def cfg_text(self) -> str:
        return self.net.cfg.to_text()

    @property
    def cfg_files(self) -> dict:
        """{name: text} of the files the cfg names (a softmax tree): a checkpoint carries them."""
        return shapes.attached_files(self.net)

    def _loop(self, x, every: bool, call=None):
        kept, outs = {}, []
        prev = x
        for i in (range(len(self.layers)) if every else self._run):
            m = self.layers[i]
            xs = [x if s < 0 else (prev if s == i - 1 else kept[s]) for s in self.sources[i]]
            prev = m(*xs) if call is None else call(i, m, xs)
            if every:
                outs.append(prev)
            if i in self._keep:
                kept[i] = prev
        return outs if every else [kept[i] for i in self.head_inputs]

    def forward(self, x: torch.Tensor) -> list:
        return self._loop(x, every=False)

    def forward_calling(self, x: torch.Tensor, call) -> list:
        """:meth:`forward` with each layer run by ``call(index, layer, inputs)``, which returns
        the layer's output: how detect's ``--batch`` runs some layers image by image
        (infer.batching)."""
        return self._loop(x, every=False, call=call)

    @torch.no_grad()
    def trace(self, x: torch.Tensor) -> list:
        """Every layer's output, index by index, in darknet's layout."""
        return [o.detach() for o in self._loop(x, every=True)]

    def fuse(self) -> "Darknet":
        """Fold every conv's and connected layer's batch norm into its weights for inference,
        as darknet's fuse_conv_batchnorm does (outputs move by ~1e-6; darknet's own fused and
        unfused outputs differ by up to 2.2e-5).  A fused model cannot be saved as .weights."""
        for m in self.modules():
            if hasattr(m, "fuse") and m is not self:
                m.fuse()
        self.fused = True
        return self

    def freeze(self, upto: int) -> "Darknet":
        """Keep layers < ``upto`` fixed (e.g. 75: the Darknet-53 backbone): no gradients, and
        their batch norms stay on running statistics even in train()."""
        self._frozen = upto
        for layer in self.layers[:upto]:
            for p in layer.parameters():
                p.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for layer in self.layers[:getattr(self, "_frozen", 0)]:
            layer.eval()
        return self


def build_model(cfg_or_path, *, width=None, height=None, channels=None, classes=None,
                width_scale=None, batch=None, device=None, dtype=None) -> Darknet:
    """Build a Darknet module from a cfg path, cfg text, a parsed Cfg or a shapes.Network.

    Rewrites (``classes``, ``width``, ``height``, ``channels``, ``width_scale``, ``batch``) are
    applied first.  Parameters get PyTorch's default initialisation (BN: gamma 1, beta 0, mean
    0, variance 1); pass ``device="meta"`` to skip initialisation when weights follow.
    ``dtype``: see :func:`to_dtype` (default float32).
    """
    net = shapes.network(cfg_or_path, width=width, height=height, channels=channels,
                     classes=classes, width_scale=width_scale, batch=batch)
    if str(device) != "meta":
        check_memory(net, device)
    with torch.device(device or "cpu"):
        model = Darknet(net)
    return model if dtype is None else to_dtype(model, dtype)


# ----- dtypes and devices for inference --------------------------------------------------------

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp64": torch.float64, "float64": torch.float64}


def resolve_dtype(dtype=None, device=None) -> torch.dtype:
    """The torch dtype meant by ``dtype``: None (float32), a floating torch.dtype, or one of
    "fp32", "bf16", "fp16", "fp64" (or their long names), or "auto": bfloat16 where it is
    measured to be faster on ``device`` (:func:`darkcfg.nn.dtypes.auto_dtype`), else float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise DarkcfgError(f"dtype {dtype}: a model computes in float32, bfloat16, float16 or "
                           f"float64")
    name = str(dtype).lower().removeprefix("torch.")
    if name == "auto":
        from .dtypes import auto_dtype
        return auto_dtype(device)[0]
    if name == "int8":
        raise DarkcfgError("dtype 'int8' is not a cast: quantise with darkcfg.load(..., "
                           "dtype=\"int8\", calib=[images]) or --dtype int8 --calib LIST")
    if name not in DTYPES:
        raise DarkcfgError(f"dtype {dtype!r}: choose one of fp32, bf16, fp16, fp64, auto")
    return DTYPES[name]


def to_dtype(model: Darknet, dtype, device=None) -> Darknet:
    """Cast ``model``'s parameters and buffers to ``dtype`` (see :func:`resolve_dtype`; "auto"
    decides for ``device``, default where the model is) in place and return it.  Inputs
    follow with ``x.to(**model.placement())``; the heads' outputs come out in that dtype, so
    decode them in float32 (``[o.float() for o in model(x)]``): box centres in bf16 move by up
    to 1/256 of their value.  For speed, fold the batch norms first (``fuse()``, in float32)."""
    if device is None:
        device = model.placement().get("device")
    return model.to(resolve_dtype(dtype, device))


def for_inference(model: Darknet, dtype=None, device=None, copy: bool = False) -> Darknet:
    """``model`` ready to run: in eval mode, on ``device`` (see :func:`device_of`), in ``dtype``
    (see :func:`resolve_dtype`; "auto" decides for that device).  bf16/fp16 fold the batch
    norms first, in float32 (:meth:`Darknet.fuse`), so a cast model cannot be saved as
    .weights: pass ``copy=True`` to leave ``model`` itself as it is (e.g. mid-training)."""
    dev = device_of(device) if device is not None else model.placement().get("device")
    want = resolve_dtype(dtype, dev)
    if copy:
        import copy as copymod
        model = copymod.deepcopy(model)
    model = model.eval().to(dev)
    if want in (torch.bfloat16, torch.float16) and not getattr(model, "fused", False):
        model.fuse()
    return model.to(want)


def describe_dtype(dtype, device=None) -> str:
    """What ``dtype`` on ``device`` means, for a message: "bfloat16 on cpu, auto: the CPU has
    avx512_bf16"."""
    dev = torch.device(device or "cpu")
    name = str(resolve_dtype(dtype, dev)).removeprefix("torch.")
    if str(dtype).lower() != "auto":
        return f"{name} on {dev}"
    from .dtypes import auto_dtype
    return f"{name} on {dev}, auto: {auto_dtype(dev)[1]}"


def device_of(name) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", "mps", a torch.device) as a torch.device that this
    machine has, or a DarkcfgError saying what is missing."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DarkcfgError(f"device {name!r}: not a device name (cpu, cuda, cuda:N, "
                           f"mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DarkcfgError(f"device {name!r}: this machine has no CUDA GPU (or this torch "
                               f"{torch.__version__} was built without CUDA)")
        if dev.index is not None and dev.index >= count:
            raise DarkcfgError(f"device {name!r}: this machine has {count} CUDA GPU(s), "
                               f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DarkcfgError(f"device {name!r}: MPS (Apple's GPU) is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DarkcfgError(f"device {name!r}: darkcfg runs on cpu, cuda or mps")
    return dev


def memory_of(device=None) -> int:
    """Bytes a model and its forward pass can use on ``device``: the GPU's total memory, or
    this machine's physical memory."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(net: shapes.Network, device=None) -> None:
    """Refuse, before allocating anything, a cfg whose one-image forward pass at its input size
    cannot fit in ``device``'s memory (e.g. width=height=100000)."""
    need, have = net.forward_bytes(), memory_of(device)
    if need <= have:
        return
    l, floats = net.peak_layer()
    w, h, c = l.input
    gib = 1 << 30
    raise net.cfg.net.error(f"a {net.width} x {net.height} input needs at least {need / gib:,.1f} GiB for "
                   f"one image's forward pass (layer {l.index} [{l.section.header}] holds "
                   f"{floats:,} floats: its {w} x {h} x {c} input and {l.outputs:,}-float output) "
                   f"but {torch.device(device or 'cpu')} has {have / gib:,.1f} GiB; use a smaller "
                   f"width/height")


def load(path: str, cfg=None, *, weights_cfg=None, cutoff: int | None = None, device=None,
         fuse: bool = False, channels_last: bool = False, progress: bool = False, dtype=None,
         **rewrites) -> Darknet:
    """A ready model from a file.

    * ``model.pt`` (written by ``darkcfg convert``): the cfg travels inside; ``cfg`` must be None.
    * ``x.weights``: needs ``cfg``; ``weights_cfg`` names the cfg whose layer order the file
      follows (default: ``cfg``); ``rewrites`` (e.g. ``classes=3``) apply to the model, and layers
      that no longer fit are left initialised (see :func:`load_weights` for the report).

    ``fuse=True`` folds batch norms into the convs (:meth:`Darknet.fuse`); ``channels_last``
    stores conv weights NHWC, usually faster on CPU with NHWC inputs.  ``dtype``: "fp32"
    (default), "bf16", "fp16", "auto" (bf16 where measured faster on ``device``) or a torch
    dtype; the model is cast after fusing (see :func:`to_dtype`).  Fastest on a CPU with AMX or
    AVX512_BF16: ``load(path, fuse=True, channels_last=True, dtype="auto")``.

    int8 (``dtype="int8", calib=...``) and ``.pt2`` files: :func:`darkcfg.load`, which hands
    them to darkcfg.infer.int8.load (calibrating reads images: downstream of nn).
    """
    if str(path).endswith(".pt2") or str(dtype).lower() == "int8":
        raise DarkcfgError(f"{path}: int8 models are loaded by darkcfg.load (which hands them "
                           f"to darkcfg.infer.int8.load), not darkcfg.nn.model.load")
    dev = device_of(device) if device else None      # a missing GPU: said before any reading
    model, _ = load_weights(path, cfg, weights_cfg=weights_cfg, cutoff=cutoff, progress=progress,
                            **rewrites)
    if fuse:
        model.fuse()
    if dev is not None:
        model = model.to(dev)
    if dtype is not None:
        model = to_dtype(model, dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@gc_paused()
def load_weights(path: str, cfg=None, *, weights_cfg=None, cutoff=None, progress=False,
                 **rewrites):
    """(model, report): like :func:`load`, also returning what was loaded and skipped."""
    from ..files import weights as W
    path, cfg, weights_cfg = (os.fspath(p) if isinstance(p, os.PathLike) else p
                              for p in (path, cfg, weights_cfg))
    if str(path).endswith((".pt", ".safetensors")):
        if cfg is not None or weights_cfg is not None or any(v is not None
                                                              for v in rewrites.values()):
            raise CfgError(f"{path} carries its own cfg: give no cfg, weights_cfg or rewrites")
        return _from_checkpoint(path)
    if cfg is None:
        raise CfgError("a .weights file needs its cfg")
    base = shapes.network(cfg)
    net = shapes.network(base, **rewrites)
    # the file follows weights_cfg's order, or the cfg's own before any rewrite changes a head
    check_memory(net)
    header, arrays = W.read_for(path, base, weights_cfg, cutoff, progress)
    with torch.device("meta"):
        model = Darknet(net)
    loaded, skipped = W.assign_arrays(model, arrays)
    model.eval()
    model.header = header
    if weights_cfg is not None:   # the file's layer order: save_darknet writes it back
        fixed = ("width", "height", "channels")     # save_darknet takes these from the model
        model.weights_cfg = shapes.network(weights_cfg, **{k: v for k, v in rewrites.items()
                                                           if k not in fixed}).cfg.to_text()
    return model, W.LoadReport(header, loaded, skipped)


def _from_checkpoint(path: str):
    """A .pt or .safetensors written by darkcfg: the cfg is inside; every tensor must fit."""
    from ..files import weights as W
    if path.endswith(".pt"):
        obj = W.read_pt(path)
        cfg_text, header, state = obj["cfg"], W.Header(**obj["header"]), obj["state_dict"]
        order, files = obj.get("weights_cfg"), obj.get("files", {})
    else:
        ck = W.read_safetensors(path)
        cfg_text, header, order, files = ck.cfg_text, ck.header, ck.weights_cfg, ck.files
        state = {k: torch.from_numpy(a) for k, a in W.state_dict_of(ck.arrays).items()}
    net = shapes.network(W.checkpoint_cfg(cfg_text, files, path))
    with torch.device("meta"):
        model = Darknet(net)
    want = set(model.state_dict())
    if set(state) != want:
        extra, missing = sorted(set(state) - want), sorted(want - set(state))
        raise W.WeightsError(f"tensors do not fit the cfg stored beside them (missing "
                             f"{missing[:3]}, unexpected {extra[:3]})", path)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:
        raise W.WeightsError(f"tensors do not fit the cfg stored beside them: "
                             f"{str(e).splitlines()[-1].strip()}", path) from None
    model.eval()
    model.header = header
    model.weights_cfg = order   # the source .weights' layer order: save_darknet writes it back
    return model, W.LoadReport(header, sum(1 for l in net.layers if l.tensors), [])
