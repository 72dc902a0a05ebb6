"""The leaf nn.Modules darknet needs, each computing what darknet's CPU forward computes.

Numeric conventions follow ../shared/reference/README.md (AlexeyAB darknet): BN eps 1e-5 added
to the variance; maxpool pads with -inf, ``padding//2`` before and the rest after; reorg and
reorg3d use darknet's two different orders; a [yolo] layer's output is the in-place activated
tensor.  Where darknet has a bug, the module computes what darknet meant and says so.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ----- activations --------------------------------------------------------------------------------


def _hard_mish(x):
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def _stair(x):
    n = torch.floor(x)
    odd = torch.remainder(n, 2) != 0
    return torch.where(odd, (x - n) + torch.floor(x / 2), torch.floor(x / 2))


def _plse(x):
    return torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))


def _lhtan(x):
    return torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))


def _normalize_channels(x, softmax=False, maxval=False):
    """darknet's normalize_channels[_softmax[_maxval]]: across channels at each position."""
    eps = 1e-4
    if not softmax:
        pos = torch.clamp(x, min=0)
        return pos / (eps + pos.sum(1, keepdim=True))
    m = x.amax(1, keepdim=True) if maxval else torch.zeros_like(x[:, :1])
    e = torch.exp(x - m)
    return e / (eps + e.sum(1, keepdim=True))


ACTIVATIONS = {
    "linear": lambda x: x,
    "logistic": torch.sigmoid,
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "relu": F.relu,
    # darknet's CPU activate() lacks relu6 and returns 0 (a bug; its CUDA kernel is right):
    # darkcfg computes the intended min(max(x, 0), 6).
    "relu6": F.relu6,
    "elu": F.elu,
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * torch.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x * x * x)),
    "relie": lambda x: torch.where(x > 0, x, 0.01 * x),
    "ramp": lambda x: F.relu(x) + 0.1 * x,
    "leaky": lambda x: F.leaky_relu(x, 0.1),
    "revleaky": lambda x: F.leaky_relu(x, 0.1),
    "tanh": torch.tanh,
    "plse": _plse,
    "stair": _stair,
    "hardtan": lambda x: torch.clamp(x, -1, 1),
    "lhtan": _lhtan,
    "swish": F.silu,
    "mish": F.mish,          # softplus threshold 20, as darknet's softplus_activate
    "hard_mish": _hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels(x, True),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels(x, True, True),
}


class Act(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self):
        return self.name


# ----- convolution ---------------------------------------------------------------------------------


class ConvBNAct(nn.Module):
    """[convolutional]: conv (bias only without BN) -> BN (eps 1e-5) -> activation.
    Submodules are always ``.conv``, ``.bn`` (or None), ``.act``: stable state_dict keys."""

    def __init__(self, c_in, opts, owner: "ConvBNAct | None" = None):
        super().__init__()
        self.stride = opts["stride"]
        self.dilation = opts["dilation"]
        self.padding, self.size = opts["padding"], opts["size"]
        self.pad = opts["padding"] * opts["dilation"]          # darknet's im2col pads pad*dilation
        self.groups = opts["groups"]
        self.xnor = opts.get("xnor", False)
        self.act = Act(opts["activation"])
        self.__dict__["owner"] = owner                           # share_index: not a submodule
        if owner is None:
            k = opts["size"]
            self.conv = nn.Conv2d(c_in, opts["filters"], k, self.stride, self.pad, self.dilation,
                                  self.groups, bias=not opts["bn"])
            self.bn = nn.BatchNorm2d(opts["filters"], eps=1e-5) if opts["bn"] else None
        else:
            self.conv, self.bn = None, None

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the batch norm into the conv (darknet's fuse_conv_batchnorm, eps 1e-5)."""
        if self.bn is None or self.xnor:
            return
        bn, conv = self.bn, self.conv
        k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True,
                          device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.copy_(conv.weight * k[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * k)
        self.conv, self.bn = fused, None

    def forward(self, x):
        src = self.owner if self.owner is not None else self
        w = src.conv.weight
        if self.xnor:   # darknet's binarize_weights / binarize_cpu
            w = torch.where(w > 0, 1.0, -1.0).to(w) * w.abs().mean((1, 2, 3), True)
            x = torch.where(x > 0, 1.0, -1.0).to(x)
        y = F.conv2d(x, w, src.conv.bias, self.stride, self.pad, self.dilation, self.groups)
        if self.dilation > 1:
            h, wd = x.shape[-2:]
            y = _fit(y, ((h + 2 * self.padding - self.size) // self.stride[0] + 1,
                         (wd + 2 * self.padding - self.size) // self.stride[1] + 1))
        if src.bn is not None:
            y = src.bn(y)
        return self.act(y)


def _fit(y, hw):
    """Crop or zero-extend to darknet's output size (they differ only for dilated kernels
    whose padding is not size//2, where darknet's size formula ignores the dilation)."""
    h, w = hw
    if y.shape[-2:] == (h, w):
        return y
    y = y[..., :h, :w]
    return F.pad(y, (0, w - y.shape[-1], 0, h - y.shape[-2]))


class Connected(nn.Module):
    """[connected]: flatten (C, H, W order) -> linear -> [BN] -> +bias -> activation."""

    def __init__(self, inputs, opts):
        super().__init__()
        self.fc = nn.Linear(inputs, opts["output"], bias=not opts["bn"])
        self.bn = nn.BatchNorm1d(opts["output"], eps=1e-5) if opts["bn"] else None
        self.act = Act(opts["activation"])

    @torch.no_grad()
    def fuse(self) -> None:
        if self.bn is None:
            return
        bn, fc = self.bn, self.fc
        k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Linear(fc.in_features, fc.out_features, device=fc.weight.device,
                          dtype=fc.weight.dtype)
        fused.weight.copy_(fc.weight * k[:, None])
        fused.bias.copy_(bn.bias - bn.running_mean * k)
        self.fc, self.bn = fused, None

    def forward(self, x):
        y = self.fc(x.flatten(1))
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)[:, :, None, None]


class Local(nn.Module):
    """[local]: a convolution with separate weights at every output position."""

    def __init__(self, c_in, opts, out_hw):
        super().__init__()
        oh, ow = out_hw
        n, k = opts["filters"], opts["size"]
        self.k, self.stride, self.pad, self.out_hw = k, opts["stride"], opts["pad"], out_hw
        self.weight = nn.Parameter(torch.empty(oh * ow, n, k * k * c_in))
        self.bias = nn.Parameter(torch.empty(n, oh, ow))
        self.act = Act(opts["activation"])
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            nn.init.uniform_(self.weight, -1 / math.sqrt(self.weight.shape[-1]),
                             1 / math.sqrt(self.weight.shape[-1]))
            self.bias.zero_()

    def forward(self, x):
        oh, ow = self.out_hw
        cols = F.unfold(x, self.k, padding=self.pad, stride=self.stride)     # (B, c*k*k, L)
        cols = cols[:, :, :oh * ow]
        y = torch.einsum("lok,bkl->bol", self.weight, cols)                  # (B, n, L)
        return self.act(y.reshape(x.shape[0], -1, oh, ow) + self.bias)


class Implicit(nn.Module):
    """[implicit]: the output is the layer's weights, repeated over the batch."""

    def __init__(self, opts):
        super().__init__()
        self.mean, self.std = opts["mean"], opts["std"]
        self.weight = nn.Parameter(torch.empty(opts["filters"], opts["atoms"], 1))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():   # darknet: mean + uniform(-std, std)
            self.weight.uniform_(-self.std, self.std).add_(self.mean)

    def forward(self, x):
        return self.weight.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class BatchNorm(nn.Module):
    """[batchnorm]: a stand-alone inference batch norm."""

    def __init__(self, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(c, eps=1e-5)

    def forward(self, x):
        return self.bn(x)


# ----- pooling and resampling -------------------------------------------------------------------


def _pool_pads(x, size, stride, padding):
    """(left, right, top, bottom) so that darknet's window start -padding//2 and its output
    size (in + padding - size)//stride + 1 come out of an unpadded pool.  int(): under the ONNX
    tracer the sizes are graph values when an axis is dynamic; the pads must stay constants
    (the export fixes H and W; only the batch may vary)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    sy, sx = stride
    oh, ow = (h + padding - size) // sy + 1, (w + padding - size) // sx + 1
    lo = padding // 2
    return lo, (ow - 1) * sx + size - w - lo, lo, (oh - 1) * sy + size - h - lo


def _pool_out(x, size, stride, padding):
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return ((h + padding - size) // stride[0] + 1, (w + padding - size) // stride[1] + 1)


class MaxPool(nn.Module):
    """[maxpool]: darknet's padding (default size-1: pads right/bottom only for size 2) with
    out-of-range cells ignored (-inf), or maxpool_depth (max across channel groups)."""

    def __init__(self, opts, out_c):
        super().__init__()
        self.size, self.stride, self.padding = opts["size"], opts["stride"], opts["padding"]
        self.depth, self.out_c = opts.get("depth", False), out_c

    def forward(self, x):
        if self.depth:
            c = x.shape[1]
            groups = -(-c // self.out_c)
            if groups * self.out_c != c:
                x = F.pad(x, (0, 0, 0, 0, 0, groups * self.out_c - c), value=-math.inf)
            return x.reshape(x.shape[0], groups, self.out_c, *x.shape[2:]).amax(1)
        l, r, t, b = _pool_pads(x, self.size, self.stride, self.padding)
        if l == r and t == b and 2 * l <= self.size:     # symmetric: the pool pads with -inf
            return F.max_pool2d(x, self.size, self.stride, (t, l))
        if l == t == 0 and 0 <= r < self.size and 0 <= b < self.size:
            # right/bottom only (size 2: yolov3-tiny's stride-1 pool, odd sizes at stride 2):
            # ceil_mode's partial windows ignore the missing cells, as darknet's -inf does
            if self.stride == (1, 1) and 2 * max(r, b) <= self.size:
                # pool with symmetric padding, drop the windows that start before the image
                return F.max_pool2d(x, self.size, 1, (b, r))[..., b:, r:]
            y = F.max_pool2d(x, self.size, self.stride, ceil_mode=True)
            if y.shape[-2:] == _pool_out(x, self.size, self.stride, self.padding):
                return y
        x = F.pad(x, (l, r, t, b), value=-math.inf)
        return F.max_pool2d(x, self.size, self.stride)


class LocalAvgPool(nn.Module):
    """[local_avgpool]: average of the in-range cells of each window."""

    def __init__(self, opts):
        super().__init__()
        self.size, self.stride, self.padding = opts["size"], opts["stride"], opts["padding"]

    def forward(self, x):
        pads = _pool_pads(x, self.size, self.stride, self.padding)
        ones = torch.ones_like(x[:1, :1])
        s = F.avg_pool2d(F.pad(x, pads), self.size, self.stride, divisor_override=1)
        n = F.avg_pool2d(F.pad(ones, pads), self.size, self.stride, divisor_override=1)
        return s / n


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Upsample(nn.Module):
    """[upsample]: nearest neighbour times ``scale``; a negative stride sum-pools instead."""

    def __init__(self, opts):
        super().__init__()
        self.s, self.scale = opts["stride"], opts["scale"]

    def forward(self, x):
        if self.s < 0:
            s = -self.s
            y = F.avg_pool2d(x, s, divisor_override=1)
        else:
            b, c, h, w = x.shape
            s = self.s
            y = x[:, :, :, None, :, None].expand(b, c, h, s, w, s).reshape(b, c, h * s, w * s)
        return y * self.scale if self.scale != 1 else y


def reorg3d(x, s):
    """darknet reorg_cpu(forward=0): out[q*C + c, j, i] = in[c, j*s + q//s, i*s + q%s]."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // s, s, w // s, s)            # (B, C, j, dy, i, dx)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, c * s * s, h // s, w // s)


class Reorg3d(nn.Module):
    def __init__(self, opts):
        super().__init__()
        self.s = opts["stride"]

    def forward(self, x):
        return reorg3d(x, self.s)


class Reorg(nn.Module):
    """[reorg] (yolov2's passthrough, reorg_old): the same permutation applied to the buffer
    read as (C/s^2, H*s, W*s), the result read back as (C*s^2, H/s, W/s).  Not pixel_unshuffle."""

    def __init__(self, opts):
        super().__init__()
        self.s = opts["stride"]

    def forward(self, x):
        b, c, h, w = x.shape
        s = self.s
        y = reorg3d(x.reshape(b, c // (s * s), h * s, w * s), s)
        return y.reshape(b, c * s * s, h // s, w // s)


# ----- joins ------------------------------------------------------------------------------------


class Route(nn.Module):
    """[route]: concatenate the inputs' channels; with groups, the group_id-th slice of each."""

    def __init__(self, opts):
        super().__init__()
        self.groups, self.gid = opts["groups"], opts["group_id"]

    def forward(self, *xs):
        if self.groups > 1:
            xs = [x.chunk(self.groups, 1)[self.gid] for x in xs]
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)


class Shortcut(nn.Module):
    """[shortcut]: previous + from... (optionally weighted), then the activation.  The output has
    the previous layer's shape; a source with other channels adds into the first min(c) only."""

    def __init__(self, c, opts, n_from):
        super().__init__()
        self.act = Act(opts["activation"])
        self.wtype, self.norm = opts["weights_type"], opts["normalization"]
        if self.wtype == "per_feature":
            self.weights = nn.Parameter(torch.ones(n_from + 1))
        elif self.wtype == "per_channel":
            self.weights = nn.Parameter(torch.ones(n_from + 1, c))

    def reset_parameters(self):
        if self.wtype != "none":
            with torch.no_grad():
                self.weights.fill_(1.0)

    def _weights(self, x):
        w = self.weights
        if self.norm == "relu":
            w = F.relu(w)
            w = w / (1e-4 + w.sum(0, keepdim=True))
        elif self.norm == "softmax":
            e = torch.exp(w - w.amax(0, keepdim=True))
            w = e / (1e-4 + e.sum(0, keepdim=True))
        w = w.to(x.dtype)
        return w.reshape(-1, 1, 1, 1) if w.dim() == 1 else w[:, :, None, None]

    def forward(self, prev, *srcs):
        w = self._weights(prev) if self.wtype != "none" else None
        out = prev * w[0] if w is not None else prev
        c = prev.shape[1]
        for i, s in enumerate(srcs, 1):
            if w is not None:
                s = s * (w[i] if w.shape[1] == 1 else w[i, :s.shape[1]])
            if s.shape[1] == c:
                out = out + s
            else:
                k = min(c, s.shape[1])
                out = torch.cat([out[:, :k] + s[:, :k], out[:, k:]], 1)
        return self.act(out)


class Product(nn.Module):
    """[scale_channels] and [sam]: previous * from, then the activation.  For scale_channels the
    previous layer is (C, 1, 1) (or (1, H, W) with scale_wh) and broadcasts; for sam both have
    one shape."""

    def __init__(self, opts):
        super().__init__()
        self.act = Act(opts["activation"])

    def forward(self, prev, src):
        return self.act(prev * src)


# ----- element-wise and passthrough -------------------------------------------------------------


class Identity(nn.Module):
    """[dropout] at inference, [empty]/[silence], [cost], [contrastive]."""

    def forward(self, x):
        return x


class Activation(nn.Module):
    def __init__(self, opts):
        super().__init__()
        self.act = Act(opts["activation"])

    def forward(self, x):
        return self.act(x)


def group_softmax(x: torch.Tensor, group: torch.Tensor, groups: int, t: float = 1.0):
    """A softmax within each group over the last dim: ``group[k]`` is entry k's group (darknet's
    softmax_tree: one softmax per run of the tree's siblings, x/t, largest subtracted)."""
    flat = x.reshape(-1, x.shape[-1]) / t
    idx = group.expand_as(flat)
    big = flat.new_full((flat.shape[0], groups), float("-inf")).scatter_reduce(
        1, idx, flat, "amax", include_self=True)
    e = torch.exp(flat - big.gather(1, idx))
    total = flat.new_zeros(flat.shape[0], groups).scatter_add(1, idx, e)
    return (e / total.gather(1, idx)).reshape(x.shape)


class TreeGroups(nn.Module):
    """A softmax tree's groups.  Kept as a plain list, turned into a tensor where the input is:
    a buffer would be left uninitialised by load()'s meta-device build (it is not in the
    state_dict: the tree file holds it)."""

    def __init__(self, tree):
        super().__init__()
        self.group_of = tree.groups()
        self.groups, self.n = len(tree.group_size), tree.n
        self._index = {}

    def index(self, device) -> torch.Tensor:
        if device not in self._index:
            self._index[device] = torch.tensor(self.group_of, dtype=torch.long, device=device)
        return self._index[device]

    def forward(self, x, t: float = 1.0):
        """x (..., N >= n): the first n entries softmaxed per group; the rest as they are."""
        head = group_softmax(x[..., :self.n], self.index(x.device), self.groups, t)
        return torch.cat([head, x[..., self.n:]], -1)


class Softmax(nn.Module):
    """[softmax]: over ``inputs/groups`` contiguous values, with temperature; output flat.
    With tree=, a softmax within each group of the tree over its first n inputs (darknet's
    forward_softmax_layer; the outputs past the tree stay 0, as darknet's calloc'd buffer)."""

    def __init__(self, opts, tree=None):
        super().__init__()
        self.groups, self.t = opts["groups"], opts["temperature"]
        self.tree = TreeGroups(tree) if tree is not None else None

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        if self.tree is not None:
            out = self.tree(x, self.t)
            return torch.cat([out[:, :self.tree.n], torch.zeros_like(out[:, self.tree.n:])], 1)
        x = x.reshape(x.shape[0], self.groups, -1)
        return torch.softmax(x / self.t, -1).reshape(x.shape[0], -1)


class LRN(nn.Module):
    """[lrn]: x * (kappa + alpha * sum of x^2 over ``size`` neighbouring channels)^-beta.
    darknet's running-window loop never adds channel size/2 into any window (a bug); darkcfg
    uses the whole window, as intended."""

    def __init__(self, opts):
        super().__init__()
        self.size, self.alpha, self.beta, self.kappa = (opts["size"], opts["alpha"],
                                                        opts["beta"], opts["kappa"])

    def forward(self, x):
        sq = (x * x).unsqueeze(1)
        lo, hi = (self.size - 1) // 2, self.size // 2
        sums = F.avg_pool3d(F.pad(sq, (0, 0, 0, 0, lo, hi)), (self.size, 1, 1), 1,
                            divisor_override=1).squeeze(1)
        return x * (self.kappa + self.alpha * sums).pow(-self.beta)


class Crop(nn.Module):
    """[crop] at inference: the centre crop, mapped to [-1, 1] unless noadjust."""

    def __init__(self, opts):
        super().__init__()
        self.h, self.w, self.noadjust = opts["height"], opts["width"], opts["noadjust"]

    def forward(self, x):
        dh, dw = (x.shape[2] - self.h) // 2, (x.shape[3] - self.w) // 2
        y = x[:, :, dh:dh + self.h, dw:dw + self.w]
        return y if self.noadjust else y * 2 - 1


class CRNN(nn.Module):
    """[crnn]: holds darknet's three convs (input, self, output) so weights load and save; it
    does not run (darknet's crnn keeps hidden state across calls)."""

    def __init__(self, c_in, opts, where):
        super().__init__()
        conv, hid = opts["conv"], opts["hidden"]
        self.input_layer = ConvBNAct(c_in, dict(conv, filters=hid))
        self.self_layer = ConvBNAct(hid, dict(conv, filters=hid))
        self.output_layer = ConvBNAct(hid, dict(conv, filters=opts["output"]))
        self.where = where

    def forward(self, *xs):
        return Unsupported.forward(self, *xs)


class Unsupported(nn.Module):
    """A layer darkcfg can size and store but not run (e.g. [crnn], which keeps state)."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def forward(self, *xs):
        from ..errors import DarkcfgError
        raise DarkcfgError(f"{getattr(self, 'what', None) or self.where}: cannot run this layer "
                           f"(its weights load and save fine)")


# ----- heads: the in-place transforms darknet applies -------------------------------------------


class Yolo(nn.Module):
    """[yolo]: logistic on x, y, objectness and classes (w, h raw), then
    x, y <- x*scale_x_y - (scale_x_y-1)/2.  With new_coords=1 the conv before is already
    logistic and only the scale_x_y step applies.  Channel = anchor*(5+classes) + entry."""

    def __init__(self, opts, extra=5):
        super().__init__()
        self.n, self.per = len(opts["mask"]), opts["classes"] + extra
        self.scale, self.new_coords = opts["scale_x_y"], opts["new_coords"]
        self.opts = opts

    def forward(self, x):
        b, _, h, w = x.shape
        v = x.reshape(b, self.n, self.per, h, w)
        xy, wh, rest = v[:, :, 0:2], v[:, :, 2:4], v[:, :, 4:]
        if not self.new_coords:
            xy, rest = torch.sigmoid(xy), torch.sigmoid(rest)
        if self.scale != 1:
            xy = xy * self.scale - 0.5 * (self.scale - 1)
        return torch.cat([xy, wh, rest], 2).reshape(b, -1, h, w)


class GaussianYolo(Yolo):
    """[Gaussian_yolo]: entries [x, sx, y, sy, w, sw, h, sh, obj, classes...]: logistic on all
    but w and h, scale_x_y on x, sx, y, sy."""

    def __init__(self, opts):
        super().__init__(opts, extra=9)

    def forward(self, x):
        b, _, h, w = x.shape
        v = x.reshape(b, self.n, self.per, h, w)
        xy = torch.sigmoid(v[:, :, 0:4])
        if self.scale != 1:
            xy = xy * self.scale - 0.5 * (self.scale - 1)
        parts = [xy, v[:, :, 4:5], torch.sigmoid(v[:, :, 5:6]), v[:, :, 6:7],
                 torch.sigmoid(v[:, :, 7:])]
        return torch.cat(parts, 2).reshape(b, -1, h, w)


class Region(nn.Module):
    """[region] (YOLOv2), CPU darknet: the output is transposed to (H, W, C); logistic on
    objectness, softmax over the classes (if softmax=1); x, y, w, h stay raw.  With tree=
    (yolo9000), a softmax within each group of the tree instead (darknet's softmax_tree on
    index + 5: class entries past the tree's n stay raw)."""

    def __init__(self, opts, tree=None):
        super().__init__()
        self.n, self.coords, self.classes = opts["num"], opts["coords"], opts["classes"]
        self.softmax = opts["softmax"]
        self.opts = opts
        self.tree = TreeGroups(tree) if tree is not None else None

    def forward(self, x):
        b, c, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(b, h, w, self.n, -1)
        k = self.coords
        parts = [v[..., :k], torch.sigmoid(v[..., k:k + 1])]
        cls = v[..., k + 1:]
        if self.tree is not None:
            cls = self.tree(cls)
        elif self.softmax:
            cls = torch.softmax(cls, -1)
        parts.append(cls)
        return torch.cat(parts, -1).reshape(b, h, w, c)


class Detection(nn.Module):
    """[detection] (YOLOv1): the input, with a softmax over each cell's classes if softmax=1."""

    def __init__(self, opts):
        super().__init__()
        self.side, self.classes, self.softmax = opts["side"], opts["classes"], opts["softmax"]
        self.opts = opts

    def forward(self, x):
        x = x.flatten(1)
        if not self.softmax:
            return x
        k = self.side * self.side * self.classes
        cls = torch.softmax(x[:, :k].reshape(x.shape[0], -1, self.classes), -1)
        return torch.cat([cls.reshape(x.shape[0], -1), x[:, k:]], 1)


class KeypointHead(nn.Module):
    """darkcfg's [keypoint] head (objective.keypoint: its targets, loss and decode): per cell
    [reg_x, reg_y, class_1..class_n, centerness] logits."""
    def __init__(self, c_in, opts):
        super().__init__()
        n = opts["classes"]
        conv = dict(groups=1, stride=(1, 1), dilation=1, share=None)
        self.shared = opts["head"] == "shared"
        if self.shared:
            self.head = ConvBNAct(c_in, dict(conv, filters=n + 3, size=1, padding=0,
                                               activation="linear", bn=False))
            return
        f, depth = opts["tower_filters"], opts["tower"]
        tower = dict(conv, filters=f, size=3, padding=1, activation="leaky", bn=True)
        for name, out in (("reg", 2), ("cls", n + 1)):
            setattr(self, f"{name}_tower", nn.Sequential(*[
                ConvBNAct(c_in if i == 0 else f, tower) for i in range(depth)]))
            setattr(self, f"{name}_head", ConvBNAct(f, dict(conv, filters=out, size=3,
                                                              padding=1, activation="linear",
                                                              bn=False)))

    def forward(self, x):
        if self.shared:
            return self.head(x)
        return torch.cat([self.reg_head(self.reg_tower(x)), self.cls_head(self.cls_tower(x))], 1)
