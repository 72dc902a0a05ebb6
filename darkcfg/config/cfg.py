"""darknet .cfg text <-> sections, with line numbers, typed getters, a writer and rewrites.

Reading follows darknet's ``read_cfg``: one ``[section]`` header per line, ``key=value`` options,
lines starting with ``#`` or ``;`` are comments, and whitespace anywhere in a line is ignored
(darknet strips it all, so ``layers = -1, 61`` is ``layers=-1,61``).  CRLF files read the same.

Two things are stricter than darknet, on purpose:

* a value that is not a number where a number is needed is a ``CfgError`` (darknet's ``atoi``
  silently reads ``"3x"`` as 3 and ``"x"`` as 0);
* a line that is neither a header, a comment nor ``key=value`` is a ``CfgError`` (darknet prints a
  warning and goes on).

And one thing is more lenient: ``#`` after a value starts a comment (darknet honours that only in
``mask=``, ``anchors=`` and ``steps=``), so ``mask = 0,1,2  # small`` works everywhere.

Every getter marks the option as *queried*; options no builder asked for are reported by
:func:`unused_options` (warnings, or errors under ``--strict``), with a did-you-mean.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass, field

from ..errors import CfgError

# darknet's string_to_layer_type: header -> canonical type name
SECTION_ALIASES = {
    "net": "net", "network": "net",
    "conv": "convolutional", "convolutional": "convolutional",
    "local": "local", "activation": "activation",
    "conn": "connected", "connected": "connected",
    "max": "maxpool", "maxpool": "maxpool",
    "local_avg": "local_avgpool", "local_avgpool": "local_avgpool",
    "avg": "avgpool", "avgpool": "avgpool",
    "reorg3d": "reorg3d", "reorg": "reorg",
    "dropout": "dropout", "lrn": "normalization", "normalization": "normalization",
    "batchnorm": "batchnorm", "soft": "softmax", "softmax": "softmax",
    "route": "route", "shortcut": "shortcut", "upsample": "upsample",
    "scale_channels": "scale_channels", "sam": "sam", "implicit": "implicit",
    "empty": "empty", "silence": "empty",
    "yolo": "yolo", "Gaussian_yolo": "gaussian_yolo", "region": "region",
    "detection": "detection", "cost": "cost", "crop": "crop", "contrastive": "contrastive",
    "crnn": "crnn", "rnn": "rnn", "gru": "gru", "lstm": "lstm", "conv_lstm": "conv_lstm",
    "history": "history", "keypoint": "keypoint",
}


@dataclass
class Option:
    key: str
    value: str
    line: int | None          # 1-based line in the source file; None for options added by a rewrite
    raw: str | None = None    # the source line as written; None once rewritten


@dataclass
class Section:
    header: str               # as written between the brackets, e.g. "conv"
    line: int | None
    index: int                # darknet layer index; -1 for [net]
    items: list = field(default_factory=list)   # Option objects and raw comment/blank lines
    raw: str | None = None
    path: str | None = None
    queried: set = field(default_factory=set)

    @property
    def type(self) -> str:
        return SECTION_ALIASES.get(self.header, self.header)

    @property
    def options(self) -> list[Option]:
        return [it for it in self.items if isinstance(it, Option)]

    # ----- lookup -------------------------------------------------------------------------
    def find(self, key: str) -> Option | None:
        """darknet's option_find: the first occurrence wins."""
        self.queried.add(key)
        for it in self.items:
            if isinstance(it, Option) and it.key == key:
                return it
        return None

    def has(self, key: str) -> bool:
        return self.find(key) is not None

    def error(self, message: str, option: Option | str | None = None) -> CfgError:
        """A CfgError at ``option``'s line (an Option, or a key written in this section), else
        at the section's header line."""
        if isinstance(option, str) and self.find(option) is not None:
            option = self.find(option)
        if isinstance(option, Option):
            return CfgError(message, self.path, option.line or self.line, self.header,
                            self.index, option.key)
        return CfgError(message, self.path, self.line, self.header, self.index, option)

    def _number(self, key, default, conv, kind):
        opt = self.find(key)
        if opt is None:
            return default
        try:
            return conv(opt.value)
        except ValueError:
            raise self.error(f"expected {kind}, got {excerpt(opt.value)}", opt) from None

    def get_int(self, key: str, default: int | None = None) -> int | None:
        return self._number(key, default, _to_int, "an integer")

    def get_float(self, key: str, default: float | None = None) -> float | None:
        return self._number(key, default, _to_float, "a number")

    def get_str(self, key: str, default: str | None = None) -> str | None:
        opt = self.find(key)
        return default if opt is None else opt.value

    def get_ints(self, key: str, default: list | None = None) -> list | None:
        return self._number(key, default, lambda v: [_to_int(t) for t in _split(v)],
                            "a comma-separated list of integers")

    def get_floats(self, key: str, default: list | None = None) -> list | None:
        return self._number(key, default, lambda v: [_to_float(t) for t in _split(v)],
                            "a comma-separated list of numbers")

    # ----- editing -------------------------------------------------------------------------
    def set(self, key: str, value) -> None:
        """Set (or add) an option; the first occurrence is the one darknet reads."""
        text = _format_value(value)
        for it in self.items:
            if isinstance(it, Option) and it.key == key:
                if it.value != text:
                    it.value, it.raw = text, None
                return
        pos = max((i for i, it in enumerate(self.items) if isinstance(it, Option)), default=-1)
        self.items.insert(pos + 1, Option(key, text, None, None))


def _split(value: str) -> list[str]:
    toks = value.split(",")
    if toks and toks[-1] == "" and len(toks) > 1:   # tolerate one trailing comma, as darknet does
        toks = toks[:-1]
    if any(t == "" for t in toks):
        raise ValueError(value)
    return toks


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        f = float(text)          # "1.0" is an integer in disguise; "1.5" is not
        if not math.isfinite(f) or f != int(f):
            raise ValueError(text) from None
        return int(f)


def _to_float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        raise ValueError(text)
    return f


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}" if value == value and abs(value) < 1e15 else repr(value)
    return str(value)


@dataclass
class Cfg:
    """A parsed cfg: the [net] section, then one section per darknet layer."""
    sections: list[Section]
    path: str | None = None
    preamble: list = field(default_factory=list)   # comment lines before the first section
    newline: str = "\n"
    final_newline: bool = True
    bom: bool = False                              # written back as read
    # {name as an option gives it: text} of the files the cfg names (a softmax tree=): a
    # checkpoint carries them beside its cfg, so it builds from any folder
    files: dict = field(default_factory=dict)

    @property
    def net(self) -> Section:
        return self.sections[0]

    @property
    def layers(self) -> list[Section]:
        return self.sections[1:]

    def copy(self) -> "Cfg":
        return copy.deepcopy(self)

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else "<cfg>"

    # ----- writer ---------------------------------------------------------------------------
    def to_text(self, canonical: bool = False) -> str:
        """The cfg as text.  Default: every comment and untouched line exactly as read, rewritten
        options as ``key=value``.  ``canonical``: headers and ``key=value`` lines only, one blank
        line between sections."""
        out: list[str] = []
        if not canonical:
            out.extend(self.preamble)
        for k, sec in enumerate(self.sections):
            if canonical:
                if k:
                    out.append("")
                out.append(f"[{sec.header}]")
                out.extend(f"{o.key}={o.value}" for o in sec.options)
                continue
            out.append(sec.raw if sec.raw is not None else f"[{sec.header}]")
            for it in sec.items:
                if isinstance(it, Option):
                    out.append(it.raw if it.raw is not None else f"{it.key}={it.value}")
                else:
                    out.append(it)
        nl = "\n" if canonical else self.newline
        text = nl.join(out)
        if canonical or self.final_newline:
            text += nl
        return ("\ufeff" + text) if self.bom and not canonical else text


def excerpt(text: str, limit: int = 40) -> str:
    """A line of a user's file as an error shows it: quoted, stripped, control and non-text
    characters escaped, at most ``limit`` characters shown (binary junk stays one short line)."""
    text = text.strip()
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    cut = len(text) > limit
    return "'" + text[:limit].replace("'", "\\'") + "'" + ("..." if cut else "")


def parse(text: str, path: str | None = None) -> Cfg:
    """Parse cfg text.  Raises CfgError for anything darknet could not make sense of."""
    bom = text.startswith("\ufeff")     # a Windows editor's UTF-8 byte order mark
    text = text[1:] if bom else text
    newline = "\r\n" if "\r\n" in text else "\n"
    final_newline = text.endswith("\n")
    lines = text.split("\n")
    if final_newline:
        lines = lines[:-1]
    preamble: list[str] = []
    sections: list[Section] = []
    for nu, raw in enumerate(lines, 1):
        raw = raw[:-1] if raw.endswith("\r") else raw
        s = "".join(raw.split())
        if "\x00" in s:
            raise CfgError("NUL byte in a text file: is this a cfg?", path, nu)
        if not s or s[0] in "#;":
            (sections[-1].items if sections else preamble).append(raw)
            continue
        if s[0] == "[":
            hdr = s.split("#", 1)[0]
            if not hdr.endswith("]") or len(hdr) < 3:
                raise CfgError(f"malformed section header {excerpt(raw)}", path, nu)
            name = hdr[1:-1]
            if name not in SECTION_ALIASES:
                known = sorted(set(SECTION_ALIASES))
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" - did you mean [{close[0]}]?" if close else ""
                raise CfgError(f"unknown section [{excerpt(name)[1:-1]}]{hint} known: "
                               f"{', '.join(known)}",
                               path, nu, name, len(sections) - 1)
            sections.append(Section(name, nu, len(sections) - 1, raw=raw, path=path))
            continue
        if not sections:
            raise CfgError(f"option {excerpt(s)} before any [section]", path, nu)
        if "=" not in s:
            raise CfgError(f"expected key=value, got {excerpt(raw)}", path, nu,
                           sections[-1].header, sections[-1].index)
        key, value = s.split("=", 1)
        value = value.split("#", 1)[0]
        if not key:
            raise CfgError(f"missing option name before '=' in {excerpt(raw)}", path, nu,
                           sections[-1].header, sections[-1].index)
        sections[-1].items.append(Option(key, value, nu, raw))
    if not sections:
        raise CfgError("no sections: a cfg starts with [net]", path, 1)
    if sections[0].type != "net":
        raise CfgError("the first section must be [net] or [network]", path, sections[0].line,
                       sections[0].header, sections[0].index)
    for sec in sections[1:]:
        if sec.type == "net":
            raise CfgError("[net] may appear only once, as the first section", path, sec.line,
                           sec.header, sec.index)
    return Cfg(sections, path, preamble, newline, final_newline, bom)


def load(path: str) -> Cfg:
    """Read and parse a cfg file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CfgError(f"cannot read: {e.strerror}", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse(text, path)


def save(cfg: Cfg, path: str, canonical: bool = False) -> None:
    from ..outputs import atomic_write
    atomic_write(path, cfg.to_text(canonical).encode("utf-8"))


# ----- unused-option report ---------------------------------------------------------------------
# Options darknet reads for training or bookkeeping only; darkcfg accepts them silently.
_COMMON = {"clip", "onlyforward", "dont_update", "burnin_update", "stopbackward", "train_only_bn",
           "dontload", "dontloadscales", "learning_rate", "stream", "wait_stream"}
TRAINING_OPTIONS = {
    "net": {"max_batches", "batch", "learning_rate", "learning_rate_min", "sgdr_cycle", "sgdr_mult",
            "momentum", "decay", "subdivisions", "time_steps", "track", "augment_speed",
            "sequential_subdivisions", "try_fix_nan", "weights_reject_freq", "equidistant_point",
            "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "ema_alpha",
            "use_cuda_graph", "loss_scale", "dynamic_minibatch", "optimized_memory",
            "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "max_crop", "min_crop", "flip",
            "blur", "gaussian_noise", "mixup", "cutmix", "mosaic", "letter_box", "mosaic_bound",
            "contrastive", "contrastive_jit_flip", "contrastive_color", "unsupervised",
            "label_smooth_eps", "resize_step", "attention", "adversarial_lr", "max_chart_loss",
            "angle", "aspect", "saturation", "exposure", "hue", "power", "policy", "burn_in",
            "step", "scale", "steps", "scales", "seq_scales", "gamma", "show_receptive_field",
            "inputs", "height", "width", "channels", "center", "random", "rescore",
            "mosaic_min_offset"},
    "convolutional": {"binary", "xnor", "bin_output", "sway", "rotate", "stretch", "stretch_sway",
                      "angle", "grad_centr", "reverse", "coordconv", "dot", "assisted_excitation",
                      "flipped"},
    "yolo": {"max", "show_details", "max_delta", "counters_per_class", "label_smooth_eps",
             "objectness_smooth", "iou_normalizer", "obj_normalizer", "cls_normalizer",
             "delta_normalizer", "iou_loss", "iou_thresh_kind", "beta_nms", "nms_kind", "jitter",
             "resize", "focal_loss", "ignore_thresh", "truth_thresh", "iou_thresh", "random",
             "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show",
             "track_ciou_norm", "embedding_layer", "map", "anchors"},
    "gaussian_yolo": {"max", "max_delta", "counters_per_class", "label_smooth_eps",
                      "objectness_smooth", "uc_normalizer", "iou_normalizer", "obj_normalizer",
                      "cls_normalizer", "delta_normalizer", "iou_loss", "iou_thresh_kind",
                      "beta_nms", "nms_kind", "yolo_point", "jitter", "resize", "ignore_thresh",
                      "truth_thresh", "iou_thresh", "random", "map", "anchors"},
    "region": {"max", "log", "sqrt", "focal_loss", "jitter", "resize", "rescore", "thresh",
               "classfix", "absolute", "random", "coord_scale", "object_scale", "noobject_scale",
               "mask_scale", "class_scale", "bias_match", "map", "anchors"},
    "detection": {"rescore", "sqrt", "max", "coord_scale", "forced", "object_scale",
                  "noobject_scale", "class_scale", "jitter", "resize", "random", "reorg"},
    "cost": {"type", "scale", "ratio", "noobject_scale", "thresh"},
    "softmax": {"spatial", "noloss"},
    "contrastive": {"classes", "yolo_layer", "temperature", "cls_normalizer", "max_delta",
                    "contrastive_neg_max"},
    "dropout": {"probability", "dropblock", "dropblock_size_rel", "dropblock_size_abs"},
    "crop": {"flip", "angle", "saturation", "exposure", "shift"},
    "maxpool": {"maxpool_zero_nonmax"},
}


@dataclass
class Unused:
    section: Section
    option: Option
    suggestion: str | None
    repeat: bool = False

    def as_error(self) -> CfgError:
        if self.repeat:
            msg = "repeated option: darknet reads only the first one"
        else:
            msg = "unused option" + (f" - did you mean '{self.suggestion}'?"
                                     if self.suggestion else "")
        return self.section.error(msg, self.option)

    def __str__(self) -> str:
        return self.as_error().format()


def unused_options(cfg: Cfg) -> list[Unused]:
    """Options no part of darkcfg asked for (call after shape inference has read the cfg)."""
    out = []
    for sec in cfg.sections:
        known = sec.queried | _COMMON | TRAINING_OPTIONS.get(sec.type, set())
        seen = set()
        for opt in sec.options:
            if opt.key in seen:
                out.append(Unused(sec, opt, None, repeat=True))
                continue
            seen.add(opt.key)
            if opt.key in known:
                continue
            close = difflib.get_close_matches(opt.key, sorted(known), n=1, cutoff=0.75)
            out.append(Unused(sec, opt, close[0] if close else None))
    return out


# ----- rewrites ---------------------------------------------------------------------------------
HEAD_TYPES = ("yolo", "gaussian_yolo", "region", "detection")
OUTPUT_TYPES = HEAD_TYPES + ("softmax", "cost")


def _head_filters(head: Section, classes: int) -> tuple[str, int]:
    """(option, value) the layer feeding ``head`` needs for ``classes`` classes."""
    if head.type in ("yolo", "gaussian_yolo"):
        num = head.get_int("num", 1)
        mask = head.get_ints("mask", None)
        n = len(mask) if mask is not None else num
        return "filters", (classes + (5 if head.type == "yolo" else 9)) * n
    if head.type == "region":
        return "filters", (head.get_int("coords", 4) + 1 + classes) * head.get_int("num", 1)
    side = head.get_int("side", 7)
    return "output", side * side * ((1 + head.get_int("coords", 1)) * head.get_int("num", 1)
                                    + classes)


def rewrite(cfg: Cfg, classes: int | None = None, width: int | None = None,
            height: int | None = None, channels: int | None = None,
            width_scale: float | None = None, batch: int | None = None) -> Cfg:
    """A copy of ``cfg`` with the requested changes; the original is untouched.

    * ``classes``: ``classes=`` of every [yolo]/[Gaussian_yolo]/[region]/[detection] and the
      ``filters=`` (``output=`` for [detection]) of the layer feeding each.
    * ``width``/``height``/``channels``/``batch``: the [net] options (batch also sets
      subdivisions=1).
    * ``width_scale``: every [convolutional]'s filters times F (rounded, at least 1) - the design
      notes' ``initial_filters`` (darknet53 with initial_filters=8 is F=0.25) - except the output
      convs right before a [yolo]/[region]/[softmax]/[cost]/[detection]; a depthwise conv
      (groups == filters) keeps groups == filters.
    """
    out = cfg.copy()
    for name, v in (("classes", classes), ("width", width), ("height", height),
                    ("channels", channels), ("batch", batch)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise CfgError(f"--{name} must be a positive integer, got {v!r}", cfg.path)
    if width_scale is not None and not (width_scale > 0 and math.isfinite(width_scale)):
        raise CfgError(f"--width-scale must be a positive number, got {width_scale!r}", cfg.path)
    for key, v in (("width", width), ("height", height), ("channels", channels)):
        if v is not None:
            out.net.set(key, v)
    if batch is not None:
        out.net.set("batch", batch)
        out.net.set("subdivisions", 1)
    secs = out.sections
    if width_scale is not None:
        for k, sec in enumerate(secs[1:], 1):
            nxt = secs[k + 1] if k + 1 < len(secs) else None
            if sec.type != "convolutional" or (nxt is not None and nxt.type in OUTPUT_TYPES):
                continue
            old = sec.get_int("filters", 1)
            new = max(1, int(round(old * width_scale)))
            sec.set("filters", new)
            if sec.get_int("groups", 1) == old and old > 1:
                sec.set("groups", new)
    if classes is not None:
        heads = [sec for sec in secs[1:] if sec.type in HEAD_TYPES + ("keypoint",)]
        if not heads:
            raise CfgError(f"--classes {classes}: the cfg has no [yolo], [Gaussian_yolo], "
                           f"[region], [detection] or [keypoint] section to change", cfg.path)
        for sec in heads:          # [keypoint] owns its convs: classes= sizes them
            if sec.type == "keypoint":
                sec.set("classes", classes)
        for k, sec in enumerate(secs[1:], 1):
            if sec.type not in HEAD_TYPES:
                continue
            feed = secs[k - 1]
            key, value = _head_filters(sec, classes)
            want = "convolutional" if key == "filters" else "connected"
            if feed.type != want:
                raise sec.error(f"--classes needs a [{want}] right before this layer to resize, "
                                f"found [{feed.header}]")
            sec.set("classes", classes)
            feed.set(key, value)
    for sec in out.sections:     # the rewrite's own reads are not the user's options being used
        sec.queried.clear()
    return out
