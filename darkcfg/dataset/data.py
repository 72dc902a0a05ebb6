"""Training data the way darknet users have it: .data files, image lists, label files, the
check that runs before training, and the deterministic loader of augmented batches.

* :func:`read_data` - darknet's ``read_data_cfg`` (src/option_list.c): ``key=value`` lines, every
  blank removed, ``#``/``;`` comments, the first occurrence of a key wins.
* :func:`image_list` - a list file of image paths (darknet's ``get_paths``) or a folder.
* :func:`label_path` - darknet's ``replace_image_to_label`` (src/utils.c), plus one fallback.
* :func:`read_labels` - ``class cx cy w h`` lines (``class x y`` for keypoints), every problem
  reported as ``file:line: what is wrong`` (darknet's ``read_boxes`` stops silently instead).
* :func:`check` - what ``darkcfg data check`` prints and what training runs first.
* :class:`TrainLoader` - batches of darknet's detection augmentation (``darkcfg.augment``),
  one per forward pass; a sample depends only on (seed, iteration, slot).

Relative paths: darknet opens every path relative to the current folder.  darkcfg tries that
first and then the folder of the file that names the path and that folder's parents, so a
``data/obj.data`` written for darknet's root also works from anywhere else.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..config.cfg import excerpt
from ..errors import DarkcfgError

# darknet's replace_image_to_label: (from, to), first occurrence, in this order
_LABEL_RULES = (("/images/train2017/", "/labels/train2017/"),
                ("/images/val2017/", "/labels/val2017/"),
                ("/JPEGImages/", "/labels/"),
                ("\\images\\train2017\\", "\\labels\\train2017\\"),
                ("\\images\\val2017\\", "\\labels\\val2017\\"),
                ("\\images\\train2014\\", "\\labels\\train2014\\"),
                ("\\images\\val2014\\", "\\labels\\val2014\\"),
                ("/images/train2014/", "/labels/train2014/"),
                ("/images/val2014/", "/labels/val2014/"),
                ("\\JPEGImages\\", "\\labels\\"))
# darknet's extensions (exact case: .jpg .JPG ... .tiff .TIFF); darkcfg takes any case and more
DARKNET_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tiff")
IMAGE_EXTS = DARKNET_EXTS + (".tif", ".webp", ".pgm", ".pbm", ".jp2")
TOLERANCE = 1e-3        # how far outside [0, 1] a label value may stray before it is an error


# ----- .data ------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """A .data file.  Paths are as written; :meth:`resolve` finds them on disk."""
    path: str
    classes: int | None = None
    train: str | None = None
    valid: str | None = None
    names: str | None = None
    backup: str | None = None
    options: dict = field(default_factory=dict)     # every key, as written (first wins)
    lines: dict = field(default_factory=dict)       # key -> line number
    spaced: dict = field(default_factory=dict)      # key -> its value as written, with spaces

    def resolve(self, key: str) -> str | None:
        """The value of ``key`` as a path that exists (see the module notes), or as written
        (relative to the current folder) when none does; None when the key is absent.  A value
        written with spaces whose space-less path (what darknet reads) does not exist is an
        error saying so."""
        value = self.options.get(key)
        if value is None:
            return None
        path = resolve_path(value, self.path)
        if key in self.spaced and not os.path.exists(path):
            raise DarkcfgError(f"{self.where(key)}: {key} = {self.spaced[key]}: darknet's .data "
                               f"reader drops every space, so this reads as '{value}', which "
                               f"does not exist: rename the file or folder without spaces")
        return path

    def where(self, key: str) -> str:
        return f"{self.path}:{self.lines[key]}" if key in self.lines else self.path


def read_data(path: str) -> DataConfig:
    """darknet's read_data_cfg.  A line without ``=`` or with nothing after it is an error
    (darknet prints 'Config file error' or keeps a key without value)."""
    text = _read_text(path)
    options, lines, spaced = {}, {}, {}
    for nu, raw in enumerate(text.splitlines(), 1):
        line = "".join(raw.split())             # darknet's strip(): every space, tab, CR, LF
        if not line or line[0] in "#;":
            continue
        key, eq, value = line.partition("=")
        if not eq or not key:
            raise DarkcfgError(f"{path}:{nu}: expected key=value, got {excerpt(line)}")
        if not value:
            raise DarkcfgError(f"{path}:{nu}: '{key}=' has no value")
        if key not in options:                  # option_find walks from the front
            options[key], lines[key] = value, nu
            written = raw.partition("=")[2].strip()
            if written != value:
                spaced[key] = written
    classes = None
    if "classes" in options:
        try:
            classes = int(options["classes"])
        except ValueError:
            raise DarkcfgError(f"{path}:{lines['classes']}: classes='{options['classes']}' is "
                               f"not an integer") from None
        if classes < 1:
            raise DarkcfgError(f"{path}:{lines['classes']}: classes must be >= 1, got {classes}")
    return DataConfig(path, classes, options.get("train"), options.get("valid"),
                      options.get("names"), options.get("backup"), options, lines, spaced)


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8-sig", errors="replace")     # a BOM is not text
    except IsADirectoryError:
        raise DarkcfgError(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise DarkcfgError(f"{path}: cannot read: {e.strerror}") from None


def _bases(referrer: str | None) -> list:
    """Folders a relative path may be relative to: the current one (darknet), then the
    referring file's folder and its parents."""
    out = [os.getcwd()]
    if referrer:
        d = os.path.dirname(os.path.abspath(referrer))
        while True:
            out.append(d)
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
    return out


def resolve_path(path: str, referrer: str | None = None) -> str:
    if os.path.isabs(path):
        return path
    for base in _bases(referrer):
        p = os.path.join(base, path)
        if os.path.exists(p):
            return os.path.normpath(p) if base != os.getcwd() else path
    return path


# ----- image lists --------------------------------------------------------------------------------


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTS)


def image_list(source: str) -> list:
    """The image paths of a list file (one a line, blank lines and ``#`` lines skipped; relative
    entries resolved once for the whole list, see the module notes) or of a folder (every image
    in it and below, sorted)."""
    if os.path.isdir(source):
        found = [os.path.join(root, f) for root, _, files in os.walk(source)
                 for f in files if is_image(f)]
        if not found:
            raise DarkcfgError(f"{source}: no images in this folder (looked for "
                               f"{', '.join(IMAGE_EXTS)})")
        return sorted(found)
    if not os.path.exists(source):
        raise DarkcfgError(f"{source}: no such file or folder")
    entries = [p.strip() for p in _read_text(source).splitlines()]
    entries = [p for p in entries if p and not p.startswith("#")]
    if not entries:
        raise DarkcfgError(f"{source}: lists no images")
    base = _list_base(entries, source)
    return [p if os.path.isabs(p) or base is None else os.path.join(base, p) for p in entries]


def _list_base(entries: list, source: str) -> str | None:
    """The folder the list's relative entries are relative to: the first candidate (current
    folder first, as darknet) where one of the first few relative entries exists."""
    rel = [p for p in entries if not os.path.isabs(p)][:8]
    if not rel:
        return None
    for base in _bases(source):
        if any(os.path.exists(os.path.join(base, p)) for p in rel):
            return None if base == os.getcwd() else base
    return None


def check_listed(source: str, limit: int = 5) -> None:
    """Every entry of a list file exists, else an error naming the first ``limit`` missing
    ones by the list's file:line (a folder lists only what exists)."""
    if os.path.isdir(source):
        return
    missing = [f"{source}:{nu}: image '{p}' does not exist"
               for nu, p in list_lines(source) if not os.path.isfile(p)]
    if missing:
        more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
        raise DarkcfgError(f"{source}: {_n(len(missing), 'listed image')} missing:\n  "
                           + "\n  ".join(missing[:limit]) + more)


def list_lines(source: str) -> list:
    """(line number, path) of a list file's entries, resolved as :func:`image_list` does."""
    raw = [(nu, p.strip()) for nu, p in enumerate(_read_text(source).splitlines(), 1)]
    raw = [(nu, p) for nu, p in raw if p and not p.startswith("#")]
    base = _list_base([p for _, p in raw], source)
    return [(nu, p if os.path.isabs(p) or base is None else os.path.join(base, p))
            for nu, p in raw]


# ----- labels ------------------------------------------------------------------------------------


def darknet_label_path(image_path: str) -> str | None:
    """darknet's replace_image_to_label exactly; None where darknet fails to infer a name
    (its extension list is case-sensitive: .jpg .JPG .jpeg .JPEG .png .PNG ...)."""
    p = image_path
    for old, new in _LABEL_RULES:
        p = p.replace(old, new, 1)
    p = p.strip(" \t")
    for ext in DARKNET_EXTS:
        for e in (ext, ext.upper()):
            if p.endswith(e):
                return p[:-len(e)] + ".txt"
    return None


def label_path(image_path: str) -> str:
    """The label file of an image, as darknet finds it (the COCO/VOC ``images/train2017``,
    ``JPEGImages`` -> ``labels`` rules, else next to the image, extension -> ``.txt``).
    Beyond darknet: any case of the extension and .tif/.webp/...; and when darknet's file does
    not exist but ``.../images/...`` -> ``.../labels/...`` (the last ``images`` folder, the
    ultralytics layout) does, that one."""
    p = darknet_label_path(image_path)
    if p is None:
        stem, ext = os.path.splitext(image_path.strip(" \t"))
        if ext.lower() not in IMAGE_EXTS:
            raise DarkcfgError(f"{image_path}: cannot infer the label file name: not an image "
                               f"extension ({', '.join(IMAGE_EXTS)})")
        p = darknet_label_path(stem + ".jpg")
    if os.path.exists(p):
        return p
    for sep in ("/", "\\"):
        key = f"{sep}images{sep}"
        i = p.rfind(key)
        if i >= 0:
            alt = p[:i] + f"{sep}labels{sep}" + p[i + len(key):]
            if os.path.exists(alt):
                return alt
    return p


def read_labels(path: str) -> tuple:
    """Rows (N, 5) float32 [class, cx, cy, w, h] of a label file, normalized; a 3-number
    keypoint line ``class x y`` gives w = h = 0.  Second item: every problem as
    ``file:line: what is wrong`` (those lines are left out of the rows).  A missing file is a
    negative image: (0, 5) rows, no problem.  Class ids are not checked against a class count
    here (:func:`check` does)."""
    if not os.path.exists(path):
        return np.zeros((0, 5), np.float32), []
    try:
        text = _read_text(path)
    except DarkcfgError as e:
        return np.zeros((0, 5), np.float32), [str(e)]
    rows, problems = [], []
    for nu, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        row, what = _parse_label(parts)
        if what:
            problems.append(f"{path}:{nu}: {what}: {excerpt(line)}")
        else:
            rows.append(row)
    out = np.asarray(rows, np.float32).reshape(-1, 5)
    return out, problems


def _parse_label(parts: list) -> tuple:
    """(row, None) or (None, what is wrong)."""
    if len(parts) not in (3, 5):
        n = len(parts)
        return None, (f"{n} number{'s' if n != 1 else ''}; expected 5 (class cx cy w h) or 3 "
                      f"(class x y, a keypoint)")
    try:
        cls = int(parts[0])
    except ValueError:
        try:
            float(parts[0])
            return None, (f"class {excerpt(parts[0], 20)} is not an integer (darknet would "
                          f"misread the rest of the file)")
        except ValueError:
            return None, f"class {excerpt(parts[0], 20)} is not a number"
    try:
        vals = [float(v) for v in parts[1:]]
    except ValueError:
        bad = next(v for v in parts[1:] if not _is_float(v))
        return None, f"{excerpt(bad, 20)} is not a number"
    if cls < 0:
        return None, f"class {cls} is negative"
    names = ("cx", "cy", "w", "h") if len(vals) == 4 else ("x", "y")
    for name, v in zip(names, vals):
        if not math.isfinite(v) or v < -TOLERANCE or v > 1 + TOLERANCE:
            return None, f"{name}={parts[1 + names.index(name)][:20]} is outside [0, 1]"
    if len(vals) == 4:
        if vals[2] <= 0 or vals[3] <= 0:
            return None, "zero size (w and h must be > 0)"
        if vals[0] == 0 and vals[1] == 0:
            return None, "centre at (0, 0): darknet drops such a box as invalid"
    x, y = vals[0], vals[1]
    w, h = (vals[2], vals[3]) if len(vals) == 4 else (0.0, 0.0)
    return [cls, x, y, w, h], None


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# ----- images ------------------------------------------------------------------------------------


def opencv():
    """cv2, with OpenCV's own log lines (``[ WARN:0@0.8] global loadsave.cpp ...``) silenced:
    darkcfg says what went wrong itself, naming the file (:func:`image_damage`, :func:`_imread`)."""
    global _OPENCV_QUIET
    if not _OPENCV_QUIET:
        # FFmpeg's own lines ('[tcp @ 0x..] Connection refused') too: OpenCV reads this when
        # it first opens a video, so it is set before any VideoCapture exists
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2
    if not _OPENCV_QUIET:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _OPENCV_QUIET = True
    return cv2


_OPENCV_QUIET = False
_TAIL = 65536           # bytes read from a JPEG's end to find its end-of-image marker


def image_damage(path: str) -> str | None:
    """Why an image file is cut short, or None: the one rule train, map, detect and data check
    apply before decoding.  A JPEG must have its end-of-image marker (FF D9) after its last
    start-of-scan (FF DA; scan data cannot hold FF D9, so a marker there is the real end):
    libjpeg decodes a truncated JPEG into grey rows with one 'Premature end of JPEG file' on
    stderr that names no file, and darknet trains on it; darkcfg refuses it, by name.  Other
    formats a decoder cannot read fail to decode (:func:`_imread`)."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return None
            size = f.seek(0, os.SEEK_END)
            f.seek(max(2, size - _TAIL))
            tail = f.read()
    except OSError:
        return None                     # the decoder's error says it
    sos = tail.rfind(b"\xff\xda")
    if tail.find(b"\xff\xd9", max(sos, 0)) < 0:
        return (f"{path}: a truncated JPEG (no end-of-image marker after its last scan; "
                f"libjpeg would fill the rest with grey): re-save or replace it, or remove it "
                f"from the list")
    return None


def load_image(path: str, channels: int = 3) -> np.ndarray:
    """H x W x 3 uint8 RGB (H x W x 1 for ``channels=1``), decoded by OpenCV as darknet's
    load_image_mat_cv does (BGR -> RGB)."""
    cv2 = opencv()
    img = _imread(path, channels)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if channels >= 3 else img


def _imread(path: str, channels: int = 3) -> np.ndarray:
    """H x W x 3 BGR (or H x W x 1) uint8, as OpenCV decodes it; a missing, truncated or
    undecodable file is an error naming it."""
    cv2 = opencv()
    damage = image_damage(path)
    if damage:
        raise DarkcfgError(damage)
    img = cv2.imread(path, cv2.IMREAD_COLOR if channels >= 3 else cv2.IMREAD_GRAYSCALE)
    if img is None:
        if not os.path.exists(path):
            raise DarkcfgError(f"{path}: no such image")
        raise DarkcfgError(f"{path}: OpenCV cannot decode this image")
    return img if channels >= 3 else img[:, :, None]


# ----- the check ----------------------------------------------------------------------------------


@dataclass
class SplitStats:
    name: str
    list: str | None
    images: int = 0
    boxes: int = 0
    points: int = 0
    negatives: int = 0              # images without a box (label file empty or missing)
    no_label_file: int = 0
    undecodable: int = 0
    per_class: dict = field(default_factory=dict)        # class id -> boxes (and points)
    sizes: dict = field(default_factory=dict)            # "w"/"h" -> spread, network pixels
    tiny: int = 0                   # boxes under one network pixel (darknet drops them)
    same_as: str | None = None      # "train" when valid falls back to the train list

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["per_class"] = {str(k): v for k, v in sorted(self.per_class.items())}
        return d


@dataclass
class CheckReport:
    data: str
    cfg: str | None
    classes: int | None
    classes_from: str
    network: tuple | None                       # (w, h) of the cfg
    names: list = field(default_factory=list)
    splits: list = field(default_factory=list)  # SplitStats
    errors: list = field(default_factory=list)  # "file:line: what is wrong"
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"data": self.data, "cfg": self.cfg, "classes": self.classes,
                "classes_from": self.classes_from,
                "network": list(self.network) if self.network else None, "names": self.names,
                "ok": self.ok, "splits": {s.name: self._split_dict(s) for s in self.splits},
                "errors": self.errors, "warnings": self.warnings}

    def _split_dict(self, s: SplitStats) -> dict:
        """A split with every class's count, zeros included (the text folds those)."""
        d = s.as_dict()
        if not s.same_as:
            ids = sorted(set(s.per_class) | set(range(self.classes or 0)))
            d["per_class"] = {str(k): s.per_class.get(k, 0) for k in ids}
        return d

    def format(self, limit: int | None = None) -> str:
        """The human report; ``limit`` keeps the first errors (and says how many were left)."""
        head = self.data + (f" with {self.cfg}" if self.cfg else "")
        if self.classes is not None:
            head += f": {self.classes} classes ({self.classes_from})"
        out = [head]
        for s in self.splits:
            if s.same_as:
                out.append(f"{s.name}: not set; darknet uses the {s.same_as} list")
                continue
            what = (f"{s.name}: {s.list}: {_n(s.images, 'image')}, {_n(s.boxes, 'box')}"
                    + (f", {_n(s.points, 'keypoint')}" if s.points else "")
                    + f", {_n(s.negatives, 'negative')}")
            if s.no_label_file:
                what += f" ({s.no_label_file} without a label file)"
            if s.undecodable:
                what += f", {s.undecodable} undecodable"
            out.append(what)
        out += self._class_lines()
        out += self._size_lines()
        if self.warnings:
            out.append(f"warnings ({len(self.warnings)}):")
            out += ["  " + w for w in self.warnings]
        if self.errors:
            shown = self.errors if limit is None else self.errors[:limit]
            out.append(f"errors ({len(self.errors)}):")
            out += ["  " + e for e in shown]
            if len(shown) < len(self.errors):
                out.append(f"  ... and {len(self.errors) - len(shown)} more")
        out.append("OK" if self.ok else f"FAILED: {len(self.errors)} "
                   f"error{'s' if len(self.errors) != 1 else ''}")
        return "\n".join(out)

    def _class_lines(self) -> list:
        splits = [s for s in self.splits if not s.same_as]
        ids = sorted({k for s in splits for k in s.per_class} |
                     set(range(self.classes or 0)))
        if not ids:
            return []
        out = ["boxes per class (" + " / ".join(s.name for s in splits) + "):"]
        empty = []
        for k in ids:
            if not any(s.per_class.get(k, 0) for s in splits):
                empty.append(k)
                continue
            counts = " / ".join(str(s.per_class.get(k, 0)) for s in splits)
            out.append(f"  {k:>3} {self._name(k):<20} {counts}")
        if empty:                       # one line, not a row per empty class
            n = len(empty)
            which = (", ".join(f"{k} {self._name(k)}".rstrip() for k in empty) if n <= 8
                     else _id_ranges(empty))
            out.append(f"  {n} class{'es have' if n != 1 else ' has'} no boxes: {which}")
        return out

    def _name(self, k: int) -> str:
        return self.names[k] if 0 <= k < len(self.names) else ""

    def _size_lines(self) -> list:
        out = []
        for s in self.splits:
            if not s.sizes:
                continue
            w, h = self.network
            out.append(f"box size in network pixels ({w}x{h}), {s.name}:")
            for k in ("w", "h"):
                v = s.sizes[k]
                out.append(f"  {k}: min {v['min']:.1f}  5% {v['p5']:.1f}  median "
                           f"{v['p50']:.1f}  95% {v['p95']:.1f}  max {v['max']:.1f}")
            if s.tiny:
                out.append(f"  {_n(s.tiny, 'box')} under one network pixel: darknet drops "
                           f"{'it' if s.tiny == 1 else 'them'}")
        return out


def _id_ranges(ids: list) -> str:
    """[1, 2, 4, 6, 7, 8] -> '1-2, 4, 6-8'."""
    runs = []
    for k in ids:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def _n(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "es" if word.endswith("x") else "s")


def _spread(v: np.ndarray) -> dict:
    p = np.percentile(v, [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "p50", "p95", "max"), (round(float(x), 2) for x in p)))


def _decodes(path: str) -> str | None:
    """None when the image decodes, else why not (naming it)."""
    damage = image_damage(path)
    if damage:
        return damage
    cv2 = opencv()
    # an eighth of the resolution: libjpeg decodes that far faster, and still reads the file
    if cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        return f"{path}: OpenCV cannot decode this image"
    return None


def _inspect(path: str, decode: bool) -> tuple:
    """(exists, why it does not decode or None, label file exists, rows, problems) of one
    image."""
    if not os.path.isfile(path):
        return False, None, False, None, []
    bad = _decodes(path) if decode else None
    try:
        lab = label_path(path)
    except DarkcfgError as e:
        return True, bad, False, np.zeros((0, 5), np.float32), [str(e)]
    rows, problems = read_labels(lab)
    return True, bad, os.path.exists(lab), rows, problems


def check(data, cfg=None, splits=("train", "valid"), decode: bool = True,
          workers: int | None = None) -> CheckReport:
    """Check a data set as training and ``darkcfg data check`` do: every list entry exists and
    decodes (``decode=False`` skips decoding), every label line parses with a class id below
    the class count (the cfg's last head, else the .data's ``classes``, else the names file)
    and values in [0, 1], and, with a cfg, the box sizes in network pixels.  Never raises for
    problems in the set: they are the report's ``errors``; a missing .data or cfg raises."""
    from concurrent.futures import ThreadPoolExecutor
    d = data if isinstance(data, DataConfig) else read_data(data)
    net = None
    if cfg is not None:
        from ..config import shapes
        net = shapes.network(cfg)
    rep = CheckReport(d.path, None if net is None else (net.cfg.path or "<cfg>"), None, "", None)
    keypoints = _setup_classes(rep, d, net)
    seen = {}
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for name in splits:
            stats = _check_split(rep, d, name, net, keypoints, decode, pool, seen)
            if stats is not None:
                rep.splits.append(stats)
    if len(seen.get("train", ())) and len(seen.get("valid", ())):
        both = seen["train"] & seen["valid"]
        if both and both != seen["train"]:
            rep.warnings.append(f"{len(both)} images are in both train and valid")
    return rep


def _setup_classes(rep: CheckReport, d: DataConfig, net) -> bool:
    """Fill the report's classes and names; True for a keypoint cfg."""
    names_path = d.resolve("names")
    if names_path and os.path.isfile(names_path):
        rep.names = [n.strip() for n in _read_text(names_path).splitlines() if n.strip()]
    elif names_path:
        rep.warnings.append(f"{d.where('names')}: names file '{d.names}' does not exist")
    keypoints = False
    if net is not None:
        from ..config.shapes import last_head
        head = last_head(net)
        rep.classes, rep.network = head.opts["classes"], (net.width, net.height)
        rep.classes_from = f"the cfg's last [{head.section.header}]"
        keypoints = head.type == "keypoint"
        if d.classes is not None and d.classes != rep.classes:
            rep.warnings.append(f"{d.where('classes')}: classes={d.classes} but the cfg's "
                                f"heads have {rep.classes}; darknet trains with the cfg's")
    elif d.classes is not None:
        rep.classes, rep.classes_from = d.classes, "the .data's classes"
    elif rep.names:
        rep.classes, rep.classes_from = len(rep.names), "the names file"
    else:
        rep.warnings.append("no class count (no cfg, no classes=, no names file): class ids "
                            "are not checked")
    if rep.names and rep.classes is not None and len(rep.names) != rep.classes:
        rep.warnings.append(f"{d.where('names')}: the names file has {len(rep.names)} names "
                            f"for {rep.classes} classes (darknet's detector map refuses this)")
    return keypoints


def _check_split(rep, d, name, net, keypoints, decode, pool, seen):
    if d.options.get(name) is None:
        if name == "valid":
            return SplitStats(name, None, same_as="train")
        rep.errors.append(f"{d.path}: no '{name}=' list")
        return None
    try:
        source = d.resolve(name)
    except DarkcfgError as e:            # a path with spaces: darknet reads another one
        rep.errors.append(str(e))
        return SplitStats(name, d.options[name])
    stats = SplitStats(name, source)
    if os.path.isdir(source):
        entries = [(None, p) for p in image_list(source)]
    elif not os.path.isfile(source):
        rep.errors.append(f"{d.where(name)}: {name}={d.options[name]}: no such list file "
                          f"or folder")
        return stats
    else:
        entries = list_lines(source)
    if not entries:                  # training would stop on it: say so here, as an error
        rep.errors.append(f"{source}: the {name} list has no images")
        return stats
    seen[name] = {os.path.abspath(p) for _, p in entries}
    sizes = []
    results = pool.map(lambda e: _inspect(e[1], decode), entries)
    for (nu, path), (exists, bad, has_label, rows, problems) in zip(entries, results):
        where = f"{source}:{nu}" if nu is not None else path
        if not exists:
            rep.errors.append(f"{where}: image '{path}' does not exist")
            continue
        stats.images += 1
        if bad is not None:                     # why it does not decode
            stats.undecodable += 1
            rep.errors.append(bad)
        rep.errors += problems
        if not has_label:
            stats.no_label_file += 1
        rows = _class_check(rep, rows, path, net, keypoints)
        if not len(rows):
            stats.negatives += 1
            continue
        pts = (rows[:, 3] == 0) & (rows[:, 4] == 0)
        stats.points += int(pts.sum())
        stats.boxes += int((~pts).sum())
        for k in rows[:, 0].astype(int):
            stats.per_class[int(k)] = stats.per_class.get(int(k), 0) + 1
        if net is not None and not keypoints:
            sizes.append(rows[~pts, 3:5].astype(np.float64) * (net.width, net.height))
    if keypoints and stats.boxes:
        rep.warnings.append(f"{name}: {_n(stats.boxes, 'box line')} with a [keypoint] cfg: each "
                            f"trains (and is scored) as its centre")
    if sizes and len(np.concatenate(sizes)):
        wh = np.concatenate(sizes)
        stats.sizes = {"w": _spread(wh[:, 0]), "h": _spread(wh[:, 1])}
        stats.tiny = int(((wh[:, 0] < 1) | (wh[:, 1] < 1)).sum())
    return stats


def _class_check(rep, rows, image, net, keypoints):
    """Errors for class ids out of range and for keypoint lines with a box cfg; the rows that
    remain."""
    if rows is None or not len(rows):
        return np.zeros((0, 5), np.float32)
    bad = np.zeros(len(rows), bool)
    lab = label_path(image)
    if rep.classes is not None:
        for i in np.nonzero(rows[:, 0] >= rep.classes)[0]:
            rep.errors.append(f"{lab}:{_line_of(lab, i)}: class {int(rows[i, 0])} is outside "
                              f"0..{rep.classes - 1} ({rep.classes_from})")
            bad[i] = True
    if net is not None and not keypoints:
        for i in np.nonzero((rows[:, 3] == 0) & (rows[:, 4] == 0) & ~bad)[0]:
            rep.errors.append(f"{lab}:{_line_of(lab, i)}: a keypoint line (class x y) but the "
                              f"cfg's last head is a box head")
            bad[i] = True
    return rows[~bad]


def _line_of(path: str, row: int) -> int:
    """The line number of the row-th good label line of a file (rows skip blank and bad
    lines)."""
    k = -1
    for nu, line in enumerate(_read_text(path).splitlines(), 1):
        parts = line.split()
        if parts and _parse_label(parts)[1] is None:
            k += 1
            if k == row:
                return nu
    return 0


# ----- the loader ---------------------------------------------------------------------------------

_SIZE_STREAM = 0x5CA1E          # seeds the multi-scale stream apart from the samples'


@dataclass
class Batch:
    """One forward pass: ``images`` (n, C, H, W) float32 RGB in [0, 1]; per image ``boxes``
    (k, 4) float32 normalized (cx, cy, w, h) of the network input (w = h = 0 for keypoints) and
    ``classes`` (k,) int64 - the lists yolo.encode_targets takes (tensors as TrainLoader gives
    them; numpy arrays on the way from a worker, see :meth:`tensors`)."""
    images: object
    boxes: list
    classes: list
    iteration: int
    subdivision: int
    size: tuple                     # (W, H) of the network for this iteration
    paths: list                     # the image of each slot (a mosaic's first piece)
    sources: list = field(default_factory=list)     # every image of each slot (4 for a mosaic)

    def pin_memory(self) -> "Batch":
        b = self.tensors()
        return Batch(b.images.pin_memory(), [x.pin_memory() for x in b.boxes],
                     [c.pin_memory() for c in b.classes], b.iteration, b.subdivision,
                     b.size, b.paths, b.sources)

    def tensors(self) -> "Batch":
        """The batch with numpy boxes/classes made tensors (no copy).  A loader worker sends
        them as numpy arrays: pickled inline with the batch, where every tensor would travel as
        its own shared-memory file (measured: ~2-3 ms of the trainer's CPU per batch of 8)."""
        import torch
        if not self.boxes or isinstance(self.boxes[0], torch.Tensor):
            return self
        return Batch(self.images, [torch.from_numpy(b) for b in self.boxes],
                     [torch.from_numpy(c) for c in self.classes], self.iteration,
                     self.subdivision, self.size, self.paths, self.sources)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The same batch with its tensors on ``device``."""
        def mv(t):
            return t.to(device, non_blocking=non_blocking)
        return Batch(mv(self.images), [mv(b) for b in self.boxes], [mv(c) for c in self.classes],
                     self.iteration, self.subdivision, self.size, self.paths, self.sources)

    def points(self) -> list:
        """Per image (k, 2) keypoint positions, for keypoint.encode."""
        return [b[:, :2] for b in self.boxes]


IMAGE_CACHE_BYTES = 128 << 20
"""Decoded training images each loading process (a worker, or the trainer with ``workers=0``)
keeps, in bytes: a small data set is decoded once, not on every draw (darknet decodes every
draw).  Past it, images are decoded each time as before; 2 ranks of 2 workers hold at most 4x
this.  Measured on the demo's 96x96 cfg, 2 workers on 2 cores: darkcfg train 1.07-1.19x the
plain loop's time an iteration with it (median of 6 runs 1.11x), 1.08-1.29x without (median
of 9 1.19x; docs/measured.md)."""


class Samples:
    """Picklable maker of samples and forward passes (what a loader worker runs)."""

    image_cache_bytes = IMAGE_CACHE_BYTES

    def __init__(self, paths, opt, mini_batch, subdivisions, seed, rank, world_size, augment):
        self.paths, self.opt = list(paths), opt
        self.mini_batch, self.subdivisions = mini_batch, subdivisions
        self.seed, self.rank, self.world_size, self.augment = seed, rank, world_size, augment
        self._labels = {}               # path -> rows, read once per process
        self._images, self._image_bytes = {}, 0     # path -> decoded image, up to the cap

    def size(self, iteration: int) -> tuple:
        from . import augment as A
        if not self.augment:
            return self.opt.width, self.opt.height
        return A.network_size(self.opt, iteration, lambda block: np.random.default_rng(
            [self.seed, _SIZE_STREAM, block]))

    def slots(self, subdivision: int) -> range:
        m, w, r = self.mini_batch, self.world_size, self.rank
        return range(subdivision * m + r * m // w, subdivision * m + (r + 1) * m // w)

    def _read(self, rng) -> tuple:
        path = self.paths[int(rng.integers(len(self.paths)))]      # darknet: with replacement
        image = self._images.get(path)
        if image is None:
            image = _imread(path, self.opt.channels)                # BGR: see augment_image
            if self._image_bytes + image.nbytes <= self.image_cache_bytes:
                image.setflags(write=False)     # augmentation makes new arrays, never writes
                self._images[path] = image
                self._image_bytes += image.nbytes
        rows = self._labels.get(path)
        if rows is None:
            rows = read_labels(label_path(path))[0].astype(np.float64)
            if self.opt.keypoints:
                rows[:, 3:5] = 0                    # a box line gives its centre
            self._labels[path] = rows
        return image, rows, path

    def sample(self, iteration: int, slot: int, size: tuple) -> tuple:
        """(image uint8 H x W x C, boxes (k, 5), paths) of one slot: a function of (seed,
        iteration, slot) only.  Any failure is a DarkcfgError naming the images."""
        rng = np.random.default_rng([self.seed, iteration, slot])
        try:
            return self._sample(rng, size)
        except DarkcfgError:
            raise
        except Exception as e:       # OpenCV on a strange image: say which, never a traceback
            again = np.random.default_rng([self.seed, iteration, slot])
            path = self.paths[int(again.integers(len(self.paths)))]
            raise DarkcfgError(f"{path} (iteration {iteration}, slot {slot}): cannot augment "
                               f"this image: {type(e).__name__}: {e}") from None

    def _sample(self, rng, size: tuple) -> tuple:
        from . import augment as A
        if not self.augment:
            image, rows, path = self._read(rng)
            image, boxes = A.plain(image, rows, self.opt, size, bgr=True)
            return image, boxes, [path]
        if self.opt.mosaic and rng.integers(2):     # darknet: half the loads are mosaics
            return A.mosaic(self._read, rng, self.opt, size, bgr=True)
        image, rows, path = self._read(rng)
        image, boxes, _, _ = A.augment_image(image, rows, rng, self.opt, size, bgr=True)
        return image, boxes, [path]

    def __call__(self, k: int) -> Batch:
        """Forward pass ``k`` (= iteration * subdivisions + subdivision)."""
        import torch
        iteration, sub = divmod(k, self.subdivisions)
        size = self.size(iteration)
        images, boxes, classes, paths = [], [], [], []
        for slot in self.slots(sub):
            img, b, p = self.sample(iteration, slot, size)
            images.append(img)
            boxes.append(b[:, 1:5].astype(np.float32))      # numpy: see Batch.tensors
            classes.append(b[:, 0].astype(np.int64))
            paths.append(p)
        x = torch.empty(len(images), images[0].shape[2], size[1], size[0])
        if torch.utils.data.get_worker_info() is not None:
            x.share_memory_()        # filled in place: sending it to the trainer copies nothing
        for i, img in enumerate(images):             # HWC uint8 -> CHW float, one copy each
            x[i].copy_(torch.from_numpy(img).permute(2, 0, 1))
        return Batch(x.div_(255), boxes, classes, iteration, sub, size, [p[0] for p in paths],
                     paths)


class _Failed:
    """A DarkcfgError carried out of a loader worker as a value, so that the main process
    raises it as one clean line (torch re-raises worker errors with their traceback)."""

    def __init__(self, message: str):
        self.message = message


class _Dataset:
    """A map-style dataset over forward passes for torch's DataLoader."""

    def __init__(self, samples: Samples):
        self.samples = samples

    def __getitem__(self, k):
        try:
            return self.samples(k)
        except DarkcfgError as e:
            return _Failed(str(e))


class _From:
    """An endless sampler: k, k + 1, ..."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1


def _fork_safely(start):
    """Start loader workers by forking this process with OpenCV's thread pool set to one
    thread (restored after): a process forked while OpenCV runs a pool hangs in its first
    OpenCV threading call (cv2.setNumThreads did, here).  fork (not spawn) so that a user's
    script is not imported again in every worker."""
    import cv2
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return start()
    finally:
        cv2.setNumThreads(threads)


def _worker_init(_):
    import signal
    import torch
    torch.set_num_threads(1)      # OpenCV's single thread comes from the parent (_fork_safely)
    # A scheduler's SIGTERM (or SIGHUP) to the process group stops the main process, which
    # saves and then closes the loader; torch's worker handler would die of it first and the
    # main process would fail on the dead worker instead of saving.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


class TrainLoader:
    """Batches of darknet's detection augmentation, endless, one per forward pass in
    (iteration, subdivision) order from ``start_iteration``.

    The image of a slot and its augmentation depend only on (seed, iteration, global slot) -
    never on ``workers`` or ``world_size`` - and the multi-scale size only on (seed,
    iteration), so 0 and 2 workers give the same batches and a resumed run (same seed,
    ``start_iteration``) continues the same stream.  Rank r of W takes slots
    [r*m/W, (r+1)*m/W) of each mini-batch m.  ``augment=False``: the plain resize (or
    letter_box) at the cfg's size, no multi-scale.  ``max_batches`` overrides the cfg's
    (multi-scale uses the largest size for the last 100 iterations).  Options darkcfg does not
    implement are in ``warnings`` (and warned about, unless ``warn=False``).  ``multiscale``,
    ``min_visible`` and ``crop_aspect``: darkcfg's departures from darknet's augmentation
    (augment.Options; None: its default)."""

    def __init__(self, paths, net, *, mini_batch, subdivisions, seed=0, start_iteration=0,
                 workers=0, rank=0, world_size=1, pin_memory=False, augment=True,
                 max_batches=None, warn=True, prefetch=2, multiscale="centred",
                 min_visible=None, crop_aspect=None):
        from . import augment as A
        if not len(paths):
            raise DarkcfgError("no training images")
        if mini_batch < 1 or subdivisions < 1:
            raise DarkcfgError(f"mini_batch and subdivisions must be >= 1, got {mini_batch}, "
                               f"{subdivisions}")
        if world_size < 1 or not 0 <= rank < world_size or mini_batch % world_size:
            raise DarkcfgError(f"a mini-batch of {mini_batch} cannot be split over "
                               f"{world_size} ranks (rank {rank})")
        self.options = A.Options.from_network(net)
        if max_batches is not None:
            self.options.max_batches = max_batches
        problem = A.check_choices(multiscale, min_visible, crop_aspect)
        if problem:
            raise DarkcfgError(problem)
        self.options.multiscale = multiscale
        if min_visible is not None:
            self.options.min_visible = min_visible
        if crop_aspect is not None:
            self.options.crop_aspect = crop_aspect
        self.warnings = list(self.options.warnings)
        if warn:
            for w in self.warnings:
                warnings.warn(w, stacklevel=2)
        self.samples = Samples(paths, self.options, mini_batch, subdivisions, seed, rank,
                               world_size, augment)
        self.start_iteration = start_iteration
        self.workers, self.pin_memory, self.prefetch = workers, pin_memory, prefetch
        self._it = None
        self._loader = None

    def size(self, iteration: int) -> tuple:
        return self.samples.size(iteration)

    def _make(self):
        from torch.utils.data import DataLoader
        kw = dict(batch_size=None, sampler=_From(self.start_iteration * self.samples.subdivisions),
                  num_workers=self.workers, pin_memory=self.pin_memory, collate_fn=_identity)
        if self.workers:
            kw.update(worker_init_fn=_worker_init, persistent_workers=True,
                      prefetch_factor=self.prefetch)
        self._loader = DataLoader(_Dataset(self.samples), **kw)
        return _fork_safely(lambda: iter(self._loader)) if self.workers else iter(self._loader)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        if self._it is None:
            self._it = self._make()
        item = next(self._it)
        if isinstance(item, _Failed):
            raise DarkcfgError(item.message)
        return item.tensors()

    def close(self) -> None:
        """Stop the worker processes."""
        it, self._it, self._loader = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _identity(x):
    return x
