"""Torch-free shape, parameter, weights-file and BFLOPs inference - what `summary` prints.

One small function per section type, registered by name (the shape of darknet's
``parse_<type>`` functions in src/parser.c).  Each reads its options through the typed getters of
:class:`darkcfg.cfg.Section` (so unread options can be reported), checks them, and returns a
:class:`Layer`: input and output (w, h, c), the absolute indices of the layers it reads, the
darknet tensors it owns in weights-file order, and its BFLOPs by darknet's formula.

Everything downstream - the PyTorch builder, the weights reader and writer, the offset table -
works from these Layer records and never re-reads cfg text.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from .cfg import HEAD_TYPES, Cfg, Section, load as load_cfg
from ..errors import CfgError, DarkcfgError

# ----- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One darknet tensor, in file order: its darknet name, its state_dict key inside the layer's
    module, and its shape as the module holds it."""
    name: str
    key: str
    shape: tuple
    trainable: bool = True

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Layer:
    index: int
    type: str
    section: Section
    input: tuple                      # (w, h, c) entering the layer
    output: tuple                     # (w, h, c) leaving it, as darknet reports it
    outputs: int                      # darknet's l.outputs: flat element count per image
    sources: list = field(default_factory=list)   # absolute indices read; -1 = network input
    tensors: list = field(default_factory=list)   # Tensor records in weights-file order
    bflops: float = 0.0               # darknet's l.bflops: what its Total BFLOPS adds up
    uncounted_bflops: float = 0.0     # work darknet leaves out of that total (connected, local)
    filters: int = 0
    size: int = 0
    stride: int = 0
    dilation: int = 1
    opts: dict = field(default_factory=dict)      # resolved options for the builder
    head: bool = False                # [yolo]/[Gaussian_yolo]/[region]/[detection]/[keypoint]
    emits: bool = False               # a head whose own output (not its input) is the result
    warnings: list = field(default_factory=list)  # things darknet accepts that deserve a word
    attached: str | None = None       # the text of the file tree= names, when the cfg carries it

    @property
    def weights(self) -> int:
        """Floats this layer occupies in a .weights file."""
        return sum(t.count for t in self.tensors)

    @property
    def params(self) -> int:
        """Trainable parameters, as PyTorch counts them (BN running stats are buffers)."""
        return sum(t.count for t in self.tensors if t.trainable)

    def error(self, message: str, option: str | None = None) -> CfgError:
        opt = self.section.find(option) if option else None
        return self.section.error(message, opt or option)


@dataclass
class Network:
    cfg: Cfg
    width: int
    height: int
    channels: int
    inputs: int
    batch: int
    layers: list

    def totals(self, cutoff: int | None = None) -> dict:
        layers = self.layers[:cutoff] if cutoff is not None else self.layers
        weights = sum(l.weights for l in layers)
        return {"layers": len(layers), "params": sum(l.params for l in layers),
                "weights": weights, "weights_bytes": HEADER_BYTES + 4 * weights,
                "bflops": darknet_bflops(layers),
                "bflops_all": round(sum(l.bflops + l.uncounted_bflops for l in layers), 3)}

    def peak_layer(self) -> tuple:
        """(layer, floats): the layer whose input and output together hold the most floats per
        image - what one forward pass must hold at once, at the least."""
        def held(l):
            w, h, c = l.input
            return (w * h * c or self.inputs) + l.outputs
        top = max(self.layers, key=held)
        return top, held(top)

    def forward_bytes(self, batch: int = 1, itemsize: int = 4) -> int:
        """A lower bound on the memory of one inference forward pass at the cfg's input size:
        the weights plus the peak layer's input and output for ``batch`` images."""
        return itemsize * (sum(l.weights for l in self.layers) + batch * self.peak_layer()[1])

    @property
    def warnings(self) -> list:
        return [w for l in self.layers for w in l.warnings]

    @property
    def heads(self) -> list:
        return [l for l in self.layers if l.head]


HEADER_BYTES = 20   # int32 major, minor, revision + uint64 seen (darknet >= 0.2)


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def darknet_bflops(layers) -> float:
    """darknet's ``Total BFLOPS`` (parse_network_cfg_custom): each layer's float l.bflops, added
    into a float, printed with %.3f.  Only [convolutional], [maxpool], [local_avgpool],
    [shortcut] and [crnn] set l.bflops; [connected] and [local] do not, so darknet leaves them
    out (they are in ``bflops_all``)."""
    total = 0.0
    for l in layers:
        if l.bflops > 0:
            total = _f32(total + _f32(l.bflops))
    return float(f"{total:.3f}")

# ----- registry -----------------------------------------------------------------------------------

def registrar(table: dict):
    """A decorator filling ``table``: ``@reg("name", "alias")`` maps each name to the function.
    Section functions here and module builders in model.py register this way."""
    def register(*names):
        def deco(fn):
            for n in names:
                table[n] = fn
            return fn
        return deco
    return register


SHAPERS: dict = {}
shaper = registrar(SHAPERS)


@dataclass
class Ctx:
    """What a section function may look at: darknet's size_params plus the layers so far."""
    index: int
    w: int
    h: int
    c: int
    inputs: int
    layers: list

    def layer(self, sec: Section, i: int, option: str) -> Layer:
        """Resolve a relative/absolute layer reference the way darknet does."""
        j = self.index + i if i < 0 else i
        if j < 0:
            raise sec.error(f"index {i} points before layer 0", sec.find(option))
        if j >= self.index:
            raise sec.error(f"index {i} points to layer {j}, which is not before this layer "
                            f"({self.index})", sec.find(option))
        return self.layers[j]

    def need_image(self, sec: Section) -> None:
        if not (self.w and self.h and self.c):
            raise sec.error(f"the layer before must output an image, got "
                            f"{self.w} x {self.h} x {self.c}")


def _layer(ctx: Ctx, sec: Section, out: tuple, **kw) -> Layer:
    outputs = kw.pop("outputs", None)
    if outputs is None:
        outputs = out[0] * out[1] * out[2]
    kw.setdefault("sources", [ctx.index - 1])
    return Layer(ctx.index, sec.type, sec, (ctx.w, ctx.h, ctx.c), out, outputs, **kw)


def _positive(sec: Section, key: str, default: int, minimum: int = 1) -> int:
    v = sec.get_int(key, default)
    if v < minimum:
        raise sec.error(f"must be >= {minimum}, got {v}", sec.find(key))
    return v


# ----- activations (names only; the functions live in layers.py) -------------------------------

ACTIVATIONS = ("logistic", "loggy", "relu", "relu6", "elu", "selu", "gelu", "relie", "ramp",
               "linear", "tanh", "plse", "leaky", "revleaky", "stair", "hardtan", "lhtan", "swish",
               "mish", "hard_mish", "normalize_channels", "normalize_channels_softmax",
               "normalize_channels_softmax_maxval")


def _activation(sec: Section, default: str) -> str:
    name = sec.get_str("activation", default)
    if name not in ACTIVATIONS:
        import difflib
        close = difflib.get_close_matches(name, ACTIVATIONS, n=1)
        hint = f" - did you mean '{close[0]}'?" if close else ""
        raise sec.error(f"unknown activation '{name}'{hint} (darknet would silently use relu)",
                        sec.find("activation"))
    return name


# ----- section functions --------------------------------------------------------------------------

def conv_tensors(n: int, c: int, groups: int, size: tuple, bn: bool, prefix: str = "") -> list:
    """A darknet conv's tensors in file order: biases, [scales, mean, variance], weights."""
    kh, kw = size
    p = prefix
    ts = [Tensor("biases", p + ("bn.bias" if bn else "conv.bias"), (n,))]
    if bn:
        ts += [Tensor("scales", p + "bn.weight", (n,)),
               Tensor("rolling_mean", p + "bn.running_mean", (n,), False),
               Tensor("rolling_variance", p + "bn.running_var", (n,), False)]
    ts.append(Tensor("weights", p + "conv.weight", (n, c // groups, kh, kw)))
    return ts


def conv_out(size_in: int, pad: int, size: int, stride: int) -> int:
    return (size_in + 2 * pad - size) // stride + 1


@shaper("convolutional")
def _conv(sec: Section, ctx: Ctx) -> Layer:
    n = _positive(sec, "filters", 1)
    groups = _positive(sec, "groups", 1)
    size = _positive(sec, "size", 1)
    sx, sy = sec.get_int("stride_x", -1), sec.get_int("stride_y", -1)
    stride = _positive(sec, "stride", 1)
    sx, sy = (sx if sx >= 1 else stride), (sy if sy >= 1 else stride)
    dilation = _positive(sec, "dilation", 1)
    dilation = 1 if size == 1 else dilation      # darknet reads it, then ignores it for 1x1
    padding = size // 2 if sec.get_int("pad", 0) else sec.get_int("padding", 0)
    if padding < 0:
        raise sec.error(f"must be >= 0, got {padding}", sec.find("padding"))
    act = _activation(sec, "logistic")
    bn = bool(sec.get_int("batch_normalize", 0) or sec.get_int("cbn", 0))
    if sec.get_int("antialiasing", 0):
        raise sec.error("antialiasing is not supported", sec.find("antialiasing"))
    xnor = bool(sec.get_int("xnor", 0))
    share = sec.get_int("share_index", None)
    ctx.need_image(sec)
    if ctx.c % groups or n % groups:
        raise sec.error(f"groups={groups} must divide both the input channels ({ctx.c}) "
                        f"and filters ({n})", sec.find("groups"))
    ow, oh = conv_out(ctx.w, padding, size, sx), conv_out(ctx.h, padding, size, sy)
    if ow < 1 or oh < 1:
        raise sec.error(f"output would be {ow} x {oh}: the {ctx.w} x {ctx.h} input is too small "
                        f"for size={size}, stride={max(sx, sy)}")
    opts = dict(filters=n, groups=groups, size=size, stride=(sy, sx), dilation=dilation,
                padding=padding, activation=act, bn=bn, share=None, xnor=xnor)
    tensors = conv_tensors(n, ctx.c, groups, (size, size), bn)
    if share is not None:
        src = ctx.layer(sec, share, "share_index")
        if src.type != "convolutional" or [t.shape for t in src.tensors if t.name == "weights"] \
                != [tensors[-1].shape] or src.opts["bn"] != bn:
            raise sec.error(f"layer {src.index} cannot share its weights with this layer "
                            f"(needs a [convolutional] of the same shape)", sec.find("share_index"))
        opts["share"] = src.opts["share"] if src.opts["share"] is not None else src.index
        tensors = []
    nweights = (ctx.c // groups) * n * size * size
    return _layer(ctx, sec, (ow, oh, n), tensors=tensors, filters=n, size=size, stride=sx,
                  dilation=dilation, bflops=2.0 * nweights * oh * ow / 1e9 / (32 if xnor else 1),
                  opts=opts)


@shaper("connected")
def _connected(sec: Section, ctx: Ctx) -> Layer:
    out = _positive(sec, "output", 1)
    act = _activation(sec, "logistic")
    bn = bool(sec.get_int("batch_normalize", 0))
    inp = ctx.inputs
    if inp < 1:
        raise sec.error("the layer before has no outputs to connect to")
    ts = [Tensor("biases", "bn.bias" if bn else "fc.bias", (out,)),
          Tensor("weights", "fc.weight", (out, inp))]
    if bn:
        ts += [Tensor("scales", "bn.weight", (out,)),
               Tensor("rolling_mean", "bn.running_mean", (out,), False),
               Tensor("rolling_variance", "bn.running_var", (out,), False)]
    return _layer(ctx, sec, (1, 1, out), tensors=ts, filters=out,   # darknet sets no l.bflops
                  uncounted_bflops=2.0 * out * inp / 1e9,
                  opts=dict(output=out, activation=act, bn=bn))


@shaper("local")
def _local(sec: Section, ctx: Ctx) -> Layer:
    n = _positive(sec, "filters", 1)
    size = _positive(sec, "size", 1)
    stride = _positive(sec, "stride", 1)
    pad = sec.get_int("pad", 0)
    act = _activation(sec, "logistic")
    ctx.need_image(sec)
    ow = ((ctx.w - size) if not pad else (ctx.w - 1)) // stride + 1
    oh = ((ctx.h - size) if not pad else (ctx.h - 1)) // stride + 1
    if ow < 1 or oh < 1:
        raise sec.error(f"output would be {ow} x {oh}")
    k = size * size * ctx.c
    ts = [Tensor("biases", "bias", (n, oh, ow)), Tensor("weights", "weight", (oh * ow, n, k))]
    return _layer(ctx, sec, (ow, oh, n), tensors=ts, filters=n, size=size, stride=stride,
                  uncounted_bflops=2.0 * n * k * oh * ow / 1e9,      # darknet sets no l.bflops
                  opts=dict(filters=n, size=size, stride=stride, pad=pad, activation=act))


def _pool_geometry(sec: Section, ctx: Ctx) -> dict:
    stride = _positive(sec, "stride", 1)
    sx, sy = _positive(sec, "stride_x", stride), _positive(sec, "stride_y", stride)
    size = _positive(sec, "size", stride)
    padding = sec.get_int("padding", size - 1)
    if padding < 0:
        raise sec.error(f"must be >= 0, got {padding}", sec.find("padding"))
    ctx.need_image(sec)
    ow, oh = (ctx.w + padding - size) // sx + 1, (ctx.h + padding - size) // sy + 1
    if ow < 1 or oh < 1:
        raise sec.error(f"output would be {ow} x {oh}")
    return dict(size=size, stride=(sy, sx), padding=padding, out=(ow, oh))


@shaper("maxpool")
def _maxpool(sec: Section, ctx: Ctx) -> Layer:
    g = _pool_geometry(sec, ctx)
    if sec.get_int("antialiasing", 0):
        raise sec.error("antialiasing is not supported", sec.find("antialiasing"))
    depth = sec.get_int("maxpool_depth", 0)
    out_c = _positive(sec, "out_channels", 1)
    ow, oh = g.pop("out")
    out = (ctx.w, ctx.h, out_c) if depth else (ow, oh, ctx.c)
    g["depth"] = bool(depth)
    return _layer(ctx, sec, out, size=g["size"], stride=g["stride"][1], opts=g,
                  bflops=g["size"] * g["size"] * ctx.c * out[0] * out[1] / 1e9)


@shaper("local_avgpool")
def _local_avgpool(sec: Section, ctx: Ctx) -> Layer:
    g = _pool_geometry(sec, ctx)
    ow, oh = g.pop("out")
    return _layer(ctx, sec, (ow, oh, ctx.c), size=g["size"], stride=g["stride"][1], opts=g,
                  bflops=g["size"] * g["size"] * ctx.c * ow * oh / 1e9)


@shaper("avgpool")
def _avgpool(sec: Section, ctx: Ctx) -> Layer:
    ctx.need_image(sec)
    return _layer(ctx, sec, (1, 1, ctx.c))


@shaper("upsample")
def _upsample(sec: Section, ctx: Ctx) -> Layer:
    s = sec.get_int("stride", 2)
    scale = sec.get_float("scale", 1.0)
    if s == 0:
        raise sec.error("stride must not be 0", sec.find("stride"))
    ctx.need_image(sec)
    if s < 0 and (ctx.w % -s or ctx.h % -s):
        raise sec.error(f"a {ctx.w} x {ctx.h} input cannot be pooled by {-s}", sec.find("stride"))
    out = (ctx.w * s, ctx.h * s, ctx.c) if s > 0 else (ctx.w // -s, ctx.h // -s, ctx.c)
    return _layer(ctx, sec, out, stride=s, opts=dict(stride=s, scale=scale))


def _reorg_shape(sec: Section, ctx: Ctx) -> Layer:
    s = _positive(sec, "stride", 1)
    reverse = sec.get_int("reverse", 0)
    ctx.need_image(sec)
    if reverse:
        raise sec.error("reverse=1 is not supported", sec.find("reverse"))
    if ctx.w % s or ctx.h % s:
        raise sec.error(f"a {ctx.w} x {ctx.h} input is not divisible by stride {s}",
                        sec.find("stride"))
    if sec.type == "reorg" and ctx.c % (s * s):
        raise sec.error(f"[reorg] needs channels ({ctx.c}) divisible by stride^2", sec.find("stride"))
    return _layer(ctx, sec, (ctx.w // s, ctx.h // s, ctx.c * s * s), stride=s, opts=dict(stride=s))


shaper("reorg3d", "reorg")(_reorg_shape)


@shaper("route")
def _route(sec: Section, ctx: Ctx) -> Layer:
    idx = sec.get_ints("layers")
    if not idx:
        raise sec.error("[route] needs layers=...", "layers")
    srcs = [ctx.layer(sec, i, "layers") for i in idx]
    groups = _positive(sec, "groups", 1)
    gid = sec.get_int("group_id", 0)
    if not 0 <= gid < groups:
        raise sec.error(f"must be in [0, {groups}), got {gid}", sec.find("group_id"))
    w, h = srcs[0].output[0], srcs[0].output[1]
    for s in srcs:
        if (s.output[0], s.output[1]) != (w, h):
            raise sec.error(f"inputs differ in size: layer {srcs[0].index} is {w} x {h}, layer "
                            f"{s.index} is {s.output[0]} x {s.output[1]}", sec.find("layers"))
        if s.output[2] % groups:
            raise sec.error(f"layer {s.index} has {s.output[2]} channels, not divisible by "
                            f"groups={groups}", sec.find("groups"))
    c = sum(s.output[2] for s in srcs) // groups
    return _layer(ctx, sec, (w, h, c), outputs=sum(s.outputs for s in srcs) // groups,
                  sources=[s.index for s in srcs], opts=dict(groups=groups, group_id=gid))


@shaper("shortcut")
def _shortcut(sec: Section, ctx: Ctx) -> Layer:
    idx = sec.get_ints("from")
    if not idx:
        raise sec.error("[shortcut] needs from=...", "from")
    srcs = [ctx.layer(sec, i, "from") for i in idx]
    act = _activation(sec, "linear")
    wtype = sec.get_str("weights_type", "none")
    wnorm = sec.get_str("weights_normalization", "none")
    if wtype == "per_layer":
        wtype = "per_feature"
    if wtype not in ("none", "per_feature", "per_channel"):
        raise sec.error(f"'{wtype}': use none, per_feature or per_channel", sec.find("weights_type"))
    if wnorm == "avg_relu":
        wnorm = "relu"
    if wnorm not in ("none", "relu", "softmax"):
        raise sec.error(f"'{wnorm}': use none, relu or softmax", sec.find("weights_normalization"))
    ctx.need_image(sec)
    for s in srcs:
        if (s.output[0], s.output[1]) != (ctx.w, ctx.h):
            raise sec.error(f"layer {s.index} is {s.output[0]} x {s.output[1]} but the previous "
                            f"layer is {ctx.w} x {ctx.h}; darknet (AlexeyAB) cannot add them",
                            sec.find("from"))
    n = len(srcs)
    ts = []
    if wtype == "per_feature":
        ts = [Tensor("weights", "weights", (n + 1,))]
    elif wtype == "per_channel":
        ts = [Tensor("weights", "weights", (n + 1, ctx.c))]
    out = (ctx.w, ctx.h, ctx.c)
    bf = out[0] * out[1] * out[2] * n / 1e9 * (2 if ts else 1)
    return _layer(ctx, sec, out, sources=[ctx.index - 1] + [s.index for s in srcs], tensors=ts,
                  bflops=bf, opts=dict(activation=act, weights_type=wtype,
                                       normalization=wnorm, channels=[s.output[2] for s in srcs]))


def _from_one(sec: Section, ctx: Ctx) -> Layer:
    idx = sec.get_ints("from")
    if not idx or len(idx) != 1:
        raise sec.error("needs exactly one layer in from=", "from")
    return ctx.layer(sec, idx[0], "from")


@shaper("scale_channels")
def _scale_channels(sec: Section, ctx: Ctx) -> Layer:
    src = _from_one(sec, ctx)
    scale_wh = bool(sec.get_int("scale_wh", 0))
    act = _activation(sec, "linear")
    w, h, c = src.output
    if scale_wh and (ctx.w, ctx.h) != (w, h):
        raise sec.error(f"scale_wh needs the previous layer's {ctx.w} x {ctx.h} to match layer "
                        f"{src.index}'s {w} x {h}", sec.find("from"))
    if not scale_wh and ctx.c != c:
        raise sec.error(f"the previous layer has {ctx.c} channels, layer {src.index} has {c}",
                        sec.find("from"))
    return _layer(ctx, sec, src.output, sources=[ctx.index - 1, src.index],
                  opts=dict(scale_wh=scale_wh, activation=act))


@shaper("sam")
def _sam(sec: Section, ctx: Ctx) -> Layer:
    src = _from_one(sec, ctx)
    act = _activation(sec, "linear")
    if (ctx.w, ctx.h, ctx.c) != tuple(src.output):
        raise sec.error(f"the previous layer ({ctx.w} x {ctx.h} x {ctx.c}) and layer {src.index} "
                        f"({' x '.join(map(str, src.output))}) must have one shape", sec.find("from"))
    return _layer(ctx, sec, src.output, sources=[ctx.index - 1, src.index],
                  opts=dict(activation=act))


@shaper("implicit")
def _implicit(sec: Section, ctx: Ctx) -> Layer:
    mean, std = sec.get_float("mean", 0.0), sec.get_float("std", 0.2)
    filters = _positive(sec, "filters", 128)
    atoms = _positive(sec, "atoms", 1)
    return _layer(ctx, sec, (1, atoms, filters),
                  tensors=[Tensor("weights", "weight", (filters, atoms, 1))], filters=filters,
                  opts=dict(filters=filters, atoms=atoms, mean=mean, std=std))


@shaper("batchnorm")
def _batchnorm(sec: Section, ctx: Ctx) -> Layer:
    ctx.need_image(sec)
    c = ctx.c
    ts = [Tensor("biases", "bn.bias", (c,)), Tensor("scales", "bn.weight", (c,)),
          Tensor("rolling_mean", "bn.running_mean", (c,), False),
          Tensor("rolling_variance", "bn.running_var", (c,), False)]
    return _layer(ctx, sec, (ctx.w, ctx.h, c), tensors=ts)


@shaper("activation")
def _activation_layer(sec: Section, ctx: Ctx) -> Layer:
    return _layer(ctx, sec, (ctx.w, ctx.h, ctx.c), outputs=ctx.inputs,
                  opts=dict(activation=_activation(sec, "linear")))


@shaper("dropout", "empty")
def _passthrough(sec: Section, ctx: Ctx) -> Layer:
    return _layer(ctx, sec, (ctx.w, ctx.h, ctx.c), outputs=ctx.inputs)


@shaper("contrastive")
def _contrastive(sec: Section, ctx: Ctx) -> Layer:
    """A training-only loss on the embeddings: passes its input on; darknet's
    make_contrastive_layer sets no out_w/h/c, so it reports 0 x 0 x 0 (l.outputs = inputs)."""
    return _layer(ctx, sec, (0, 0, 0), outputs=ctx.inputs)


@shaper("normalization")
def _lrn(sec: Section, ctx: Ctx) -> Layer:
    ctx.need_image(sec)
    opts = dict(alpha=sec.get_float("alpha", 0.0001), beta=sec.get_float("beta", 0.75),
                kappa=sec.get_float("kappa", 1.0), size=_positive(sec, "size", 5))
    return _layer(ctx, sec, (ctx.w, ctx.h, ctx.c), size=opts["size"], opts=opts)


@shaper("crop")
def _crop(sec: Section, ctx: Ctx) -> Layer:
    ch, cw = _positive(sec, "crop_height", 1), _positive(sec, "crop_width", 1)
    noadjust = bool(sec.get_int("noadjust", 0))
    ctx.need_image(sec)
    if ch > ctx.h or cw > ctx.w:
        raise sec.error(f"crop {cw} x {ch} is larger than the {ctx.w} x {ctx.h} input")
    return _layer(ctx, sec, (cw, ch, ctx.c), opts=dict(height=ch, width=cw, noadjust=noadjust))


@shaper("softmax")
def _softmax(sec: Section, ctx: Ctx) -> Layer:
    groups = _positive(sec, "groups", 1)
    temperature = sec.get_float("temperature", 1.0)
    tree = sec.get_str("tree", None)
    if ctx.inputs % groups:
        raise sec.error(f"{ctx.inputs} inputs are not divisible into {groups} groups",
                        sec.find("groups"))
    return _layer(ctx, sec, (0, 0, 0), outputs=ctx.inputs,
                  opts=dict(groups=groups, temperature=temperature, tree=tree))


@shaper("cost")
def _cost(sec: Section, ctx: Ctx) -> Layer:
    return _layer(ctx, sec, (0, 0, 0), outputs=ctx.inputs)


def _check_head(sec: Section, ctx: Ctx, expected: int, formula: str) -> None:
    if ctx.inputs != expected:
        prev = ctx.layers[-1] if ctx.layers else None
        got = f"{ctx.c} channels" if ctx.c else f"{ctx.inputs} inputs"
        what = f"layer {prev.index} [{prev.section.header}]" if prev else "the input"
        raise sec.error(f"{what} feeds it {got} but it needs {formula}; set filters= in the "
                        f"[convolutional] before it (darknet: filters= doesn't correspond to "
                        f"classes= or mask=)")


def _yolo_like(sec: Section, ctx: Ctx, extra: int) -> Layer:
    classes = sec.get_int("classes", 20)
    total = _positive(sec, "num", 1)
    mask = sec.get_ints("mask", None)
    if classes < 0:
        raise sec.error(f"must be >= 0, got {classes}", sec.find("classes"))
    mask = list(range(total)) if mask is None else mask
    warnings = []
    bad = [m for m in mask if not 0 <= m < total]
    if bad:   # darknet parses this and reads past its anchor array when decoding
        warnings.append(sec.error(f"mask entries {bad} are outside the {total} anchors (num="
                                  f"{total}); boxes of those anchors cannot be decoded",
                                  sec.find("mask")).format())
    anchors = sec.get_floats("anchors", [])
    if sec.has("anchors") and len(anchors) < 2 * total:
        warnings.append(sec.error(f"num={total} needs {2 * total} values, got {len(anchors)}; "
                                  f"the rest default to 0.5 as in darknet",
                                  sec.find("anchors")).format())
    anchors = anchors[:2 * total] + [0.5] * max(0, 2 * total - len(anchors))   # darknet default .5
    ctx.need_image(sec)
    per = classes + extra
    _check_head(sec, ctx, ctx.w * ctx.h * len(mask) * per,
                f"(classes + {extra}) * len(mask) = ({classes} + {extra}) * {len(mask)} = "
                f"{per * len(mask)} channels")
    opts = dict(classes=classes, num=total, mask=mask,
                anchors=[(anchors[2 * i], anchors[2 * i + 1]) for i in range(total)],
                scale_x_y=sec.get_float("scale_x_y", 1.0), new_coords=sec.get_int("new_coords", 0),
                ignore_thresh=sec.get_float("ignore_thresh", 0.5),
                truth_thresh=sec.get_float("truth_thresh", 1.0),
                iou_thresh=sec.get_float("iou_thresh", 1.0),
                iou_loss=sec.get_str("iou_loss", "mse"),
                iou_normalizer=sec.get_float("iou_normalizer", 0.75),
                obj_normalizer=sec.get_float("obj_normalizer", 1.0),
                cls_normalizer=sec.get_float("cls_normalizer", 1.0),
                nms_kind=sec.get_str("nms_kind", "default"), beta_nms=sec.get_float("beta_nms", 0.6))
    return _layer(ctx, sec, (ctx.w, ctx.h, ctx.c), outputs=ctx.inputs, head=True, opts=opts,
                  warnings=warnings)


@shaper("yolo")
def _yolo(sec: Section, ctx: Ctx) -> Layer:
    return _yolo_like(sec, ctx, 5)


@shaper("gaussian_yolo")
def _gaussian_yolo(sec: Section, ctx: Ctx) -> Layer:
    return _yolo_like(sec, ctx, 9)


@shaper("region")
def _region(sec: Section, ctx: Ctx) -> Layer:
    coords = _positive(sec, "coords", 4)
    classes = sec.get_int("classes", 20)
    num = _positive(sec, "num", 1)
    softmax = bool(sec.get_int("softmax", 0))
    tree = sec.get_str("tree", None)
    anchors = sec.get_floats("anchors", [])
    anchors = anchors[:2 * num] + [0.5] * max(0, 2 * num - len(anchors))
    ctx.need_image(sec)
    per = coords + 1 + classes
    _check_head(sec, ctx, ctx.w * ctx.h * num * per,
                f"(coords + 1 + classes) * num = {per} * {num} = {per * num} channels")
    return _layer(ctx, sec, (ctx.w, ctx.h, ctx.c), outputs=ctx.inputs, head=True,
                  opts=dict(coords=coords, classes=classes, num=num, softmax=softmax, tree=tree,
                            anchors=[(anchors[2 * i], anchors[2 * i + 1]) for i in range(num)]))


@shaper("detection")
def _detection(sec: Section, ctx: Ctx) -> Layer:
    coords = sec.get_int("coords", 1)
    classes = sec.get_int("classes", 1)
    num = _positive(sec, "num", 1)
    side = _positive(sec, "side", 7)
    softmax = bool(sec.get_int("softmax", 0))
    _check_head(sec, ctx, side * side * ((1 + coords) * num + classes),
                f"side^2 * ((1 + coords) * num + classes) = "
                f"{side * side * ((1 + coords) * num + classes)} inputs")
    return _layer(ctx, sec, (0, 0, 0), outputs=ctx.inputs, head=True,
                  opts=dict(coords=coords, classes=classes, num=num, side=side, softmax=softmax))


@shaper("keypoint")
def _keypoint(sec: Section, ctx: Ctx) -> Layer:
    """darkcfg's anchor-free keypoint head (design notes, "keypoint model").  It owns its convs,
    stored like darknet convs: head=shared is one 1x1 conv to 2 + classes + 1 channels;
    head=separate is a reg tower and a cls tower (``tower`` x 3x3 conv-BN-leaky of
    ``tower_filters``) each ending in a 3x3 conv (2, and classes + 1).  The output is always
    [reg_x, reg_y, class..., centerness] raw logits."""
    classes = _positive(sec, "classes", 1)
    head = sec.get_str("head", "shared")
    if head not in ("shared", "separate"):
        raise sec.error(f"'{head}': use shared or separate", sec.find("head"))
    sigma = sec.get_float("sigma", 1.0)
    if sigma <= 0:
        raise sec.error(f"must be > 0, got {sigma}", sec.find("sigma"))
    loss = sec.get_str("loss", "bce")
    if loss not in ("bce", "l2", "wbce", "focal"):
        raise sec.error(f"'{loss}': use bce, l2, wbce or focal", sec.find("loss"))
    opts = dict(classes=classes, head=head, sigma=sigma, loss=loss,
                alpha=sec.get_float("focal_alpha", 0.25), gamma=sec.get_float("focal_gamma", 2.0),
                pos_weight=sec.get_float("pos_weight", 10.0))
    ctx.need_image(sec)
    c, area = ctx.c, ctx.w * ctx.h
    if head == "shared":
        ts = conv_tensors(classes + 3, c, 1, (1, 1), False, "head.")
    else:
        depth = _positive(sec, "tower", 4)
        f = _positive(sec, "tower_filters", min(c, 256))
        opts.update(tower=depth, tower_filters=f)
        ts = []
        for name, out in (("reg", 2), ("cls", classes + 1)):
            for i in range(depth):
                ts += conv_tensors(f, c if i == 0 else f, 1, (3, 3), True, f"{name}_tower.{i}.")
            ts += conv_tensors(out, f, 1, (3, 3), False, f"{name}_head.")
    flops = sum(2.0 * t.count * area for t in ts if t.name == "weights") / 1e9
    return _layer(ctx, sec, (ctx.w, ctx.h, classes + 3), tensors=ts, filters=classes + 3,
                  bflops=flops, head=True, emits=True, opts=opts)


@shaper("crnn")
def _crnn(sec: Section, ctx: Ctx) -> Layer:
    """Shapes and weights only: three convs (input, self, output) stored one after the other.
    The builder refuses to run it (darknet's crnn carries state across calls)."""
    size, stride = _positive(sec, "size", 3), _positive(sec, "stride", 1)
    sec.get_int("dilation", 1)
    padding = size // 2 if sec.get_int("pad", 0) else sec.get_int("padding", 0)
    hid, out = _positive(sec, "hidden", 1), _positive(sec, "output", 1)
    groups = _positive(sec, "groups", 1)
    bn = bool(sec.get_int("batch_normalize", 0))
    act = _activation(sec, "logistic")
    sec.get_int("xnor", 0)
    sec.get_int("shortcut", 0)
    ctx.need_image(sec)
    ow, oh = conv_out(ctx.w, padding, size, stride), conv_out(ctx.h, padding, size, stride)
    ts = (conv_tensors(hid, ctx.c, groups, (size, size), bn, "input_layer.")
          + conv_tensors(hid, hid, groups, (size, size), bn, "self_layer.")
          + conv_tensors(out, hid, groups, (size, size), bn, "output_layer."))
    bf = 2.0 * size * size * oh * ow * (ctx.c * hid + hid * hid + hid * out) / groups / 1e9
    conv = dict(groups=groups, size=size, stride=(stride, stride), dilation=1, padding=padding,
                activation=act, bn=bn, share=None)
    return _layer(ctx, sec, (ow, oh, out), tensors=ts, filters=out, size=size, stride=stride,
                  bflops=bf, opts=dict(conv=conv, hidden=hid, output=out))


@shaper("rnn", "gru", "lstm", "conv_lstm", "history")
def _recurrent(sec: Section, ctx: Ctx) -> Layer:
    raise sec.error(f"[{sec.header}] is a recurrent layer: not supported by darkcfg (AlexeyAB "
                    f"darknet itself crashes on its rnn/gru/lstm cfgs)")


# ----- softmax trees (yolo9000's 9k.tree) --------------------------------------------------------

@dataclass
class Tree:
    """darknet's read_tree: one node per line ``name parent`` (parent -1 for a root).  A group
    is a run of consecutive lines with one parent; darknet's softmax_tree takes a softmax over
    each group in turn, covering the first ``n`` class entries."""
    path: str
    names: list
    parent: list
    group_size: list

    @property
    def n(self) -> int:
        return len(self.parent)

    def groups(self) -> list:
        """The group index of every node."""
        return [g for g, size in enumerate(self.group_size) for _ in range(size)]


def read_tree(path: str) -> Tree:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise DarkcfgError(f"{path}: cannot read the softmax tree ({e.strerror})") from None
    return parse_tree(text, path)


def parse_tree(text: str, path: str) -> Tree:
    """A tree from its text (``path`` names it in errors)."""
    names, parent, sizes = [], [], []
    for k, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if "\0" in line:
            raise DarkcfgError(f"{path}:{k}: NUL bytes after {line.split(chr(0))[0][:40]!r}: the file "
                               f"is damaged (a broken download or copy?)")
        try:
            p = int(parts[1]) if len(parts) > 1 else -1
        except ValueError:
            raise DarkcfgError(f"{path}:{k}: expected 'name parent', got {line[:60]!r}") from None
        if not -1 <= p < len(parent):   # hierarchy_predictions needs each parent done first
            raise DarkcfgError(f"{path}:{k}: parent {p} must be -1 (a root) or the index of an "
                               f"earlier line (0..{len(parent) - 1})")
        if not parent or p != parent[-1]:
            sizes.append(0)
        sizes[-1] += 1
        names.append(parts[0])
        parent.append(p)
    if not parent:
        raise DarkcfgError(f"{path}: the softmax tree is empty")
    return Tree(path, names, parent, sizes)


def load_tree(layer: Layer) -> Tree:
    """The softmax tree of a layer with tree=: the text its cfg carries (a checkpoint's), else
    the file :func:`find_tree` finds."""
    if layer.attached is not None:
        return parse_tree(layer.attached, f"{layer.section.path}:{layer.opts['tree']}")
    return read_tree(find_tree(layer))


def attached_files(net: Network) -> dict:
    """{name: text} of the files the network's options name (softmax trees) that a checkpoint
    should carry: the text its cfg carries, or the file found as darknet would find it.  A file
    that is not found is left out (a tree has no parameters: converting never needs it; building
    from the checkpoint then says it is missing)."""
    files = {}
    for l in net.layers:
        name = l.opts.get("tree")
        if not name or name in files:
            continue
        if l.attached is not None:
            files[name] = l.attached
            continue
        try:
            path = find_tree(l)
            with open(path, encoding="utf-8-sig", errors="replace") as f:
                files[name] = f.read()
        except (CfgError, OSError):
            continue
    return files


def find_tree(layer: Layer) -> str:
    """The file a tree= option names: as written (darknet opens it from its working folder),
    beside the cfg, or its file name beside the cfg (darknet's cfgs say data/9k.tree)."""
    name = layer.opts["tree"]
    here = os.path.dirname(layer.section.path or "")
    tried = [name, os.path.join(here, name), os.path.join(here, os.path.basename(name))]
    for p in tried:
        if os.path.isfile(p):
            return p
    raise layer.error(f"softmax tree '{name}' not found (tried {', '.join(dict.fromkeys(tried))})",
                      "tree")


# ----- the walk ------------------------------------------------------------------------------------

def infer(cfg: Cfg | str | os.PathLike, width: int | None = None, height: int | None = None,
          channels: int | None = None) -> Network:
    """Walk the cfg's sections as darknet's parse_network_cfg does and return the Network.
    ``cfg``: a parsed Cfg or a path (str or os.PathLike)."""
    if isinstance(cfg, (str, os.PathLike)):
        cfg = load_cfg(os.fspath(cfg))
    net = cfg.net
    h = height if height is not None else net.get_int("height", 0)
    w = width if width is not None else net.get_int("width", 0)
    c = channels if channels is not None else net.get_int("channels", 0)
    for key, v in (("width", w), ("height", h), ("channels", c)):
        if v < 0:
            raise net.error(f"must be >= 0, got {v}", net.find(key))
    inputs = net.get_int("inputs", h * w * c)
    batch = max(1, net.get_int("batch", 1) // max(1, net.get_int("subdivisions", 1)))
    if not inputs and not (h and w and c):
        raise net.error("no input size: set width, height and channels (or inputs)")
    if not cfg.layers:
        raise net.error("the cfg has no layers after [net]")
    ctx = Ctx(0, w, h, c, inputs, [])
    for sec in cfg.layers:
        ctx.index = sec.index
        layer = SHAPERS[sec.type](sec, ctx)
        if layer.opts.get("tree"):
            layer.attached = cfg.files.get(layer.opts["tree"])
        ctx.layers.append(layer)
        ctx.w, ctx.h, ctx.c = layer.output
        ctx.inputs = layer.outputs
    return Network(cfg, w, h, c, inputs, batch, ctx.layers)


def network(cfg_or_path, **rewrites) -> Network:
    """A Network from a cfg path, cfg text, a parsed Cfg or a Network, with rewrites
    (``classes``, ``width``, ``height``, ``channels``, ``width_scale``, ``batch``) applied."""
    from . import cfg as cfgmod
    rw = {k: v for k, v in rewrites.items() if v is not None}
    if isinstance(cfg_or_path, os.PathLike):
        cfg_or_path = os.fspath(cfg_or_path)
    if isinstance(cfg_or_path, Network):
        if not rw:
            return cfg_or_path
        cfg_or_path = cfg_or_path.cfg
    if isinstance(cfg_or_path, Cfg):
        cfg = cfg_or_path
    elif isinstance(cfg_or_path, str) and "\n" in cfg_or_path:
        cfg = cfgmod.parse(cfg_or_path)
    elif isinstance(cfg_or_path, str):
        cfg = load_cfg(cfg_or_path)
    else:
        raise CfgError(f"expected a cfg path, cfg text or Cfg, got {type(cfg_or_path).__name__}")
    return infer(cfgmod.rewrite(cfg, **rw) if rw else cfg)


def last_head(net: Network) -> Layer:
    """The layer whose options drive darknet's detector loader: the last [yolo],
    [Gaussian_yolo] or [region] (darknet's train_detector), or darkcfg's [keypoint]."""
    heads = [l for l in net.layers if l.type in HEAD_TYPES + ("keypoint",)]
    if not heads:
        raise DarkcfgError(f"{net.cfg.path or '<cfg>'}: has no detection head ([yolo], [region] "
                           f"or [keypoint]) to train")
    return heads[-1]


# ----- the table -----------------------------------------------------------------------------------

_SHORT = {"convolutional": "conv", "maxpool": "max", "local_avgpool": "avg", "avgpool": "avg",
          "connected": "connected", "shortcut": "shortcut", "route": "route",
          "upsample": "upsample", "gaussian_yolo": "Gaussian_yolo",
          "scale_channels": "scale", "normalization": "lrn"}


def _describe(l: Layer) -> tuple[str, str]:
    """(filters column, size/stride(dil) column) in darknet's style."""
    if l.type == "convolutional":
        st = l.opts["stride"]
        s = f"{l.size:2d} x{l.size:2d}/{st[1]:2d}" if st[0] == st[1] else \
            f"{l.size:2d} x{l.size:2d}/{st[1]:1d}x{st[0]:1d}"
        if l.dilation > 1:
            s += f"({l.dilation})"
        return str(l.filters) + ("" if l.opts["groups"] == 1 else f"/{l.opts['groups']}"), s
    if l.type in ("maxpool", "local_avgpool"):
        return "", f"{l.size:2d} x{l.size:2d}/{l.stride:2d}"
    if l.type in ("route", "shortcut", "scale_channels", "sam"):
        src = l.sources if l.type == "route" else l.sources[1:]
        return "", " ".join(map(str, src))
    if l.type == "upsample":
        return "", f"{l.stride}x"
    if l.type in ("connected", "implicit"):
        return str(l.filters), ""
    return "", ""


def format_table(net: Network, cutoff: int | None = None) -> str:
    rows = ["   layer   filters  size/strd(dil)      input                output"]
    for l in net.layers[:cutoff]:
        filt, geo = _describe(l)
        name = _SHORT.get(l.type, l.type)
        wi, hi, ci = l.input
        wo, ho, co = l.output
        bf = f" {l.bflops:.3f} BF" if l.bflops else ""
        rows.append(f"{l.index:4d} {name:<9}{filt:>6} {geo:<15}{wi:5d} x{hi:4d} x{ci:4d} ->"
                    f"{wo:5d} x{ho:4d} x{co:4d}{bf}")
    return "\n".join(rows)
