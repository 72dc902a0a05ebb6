"""Detection metrics as pure functions of detections and ground truth (numpy; no torch).

* :func:`darknet_map` - ``darknet detector map`` (AlexeyAB ``validate_detector_map``,
  src/detector.c) to the printed digit: its matching, its ranking, its AP integration, its
  P/R/F1 at ``-thresh`` and its printed lines (:meth:`MapResult.format`);
* :func:`coco_metrics` - COCO's mAP@[.5:.95] and friends, computed by pycocotools itself;
* :func:`keypoint_map` - the keypoint model's metric: distance matching within a radius, the
  same AP integration (:class:`KeypointResult`);
* :func:`save_detections` (COCO results json), :func:`confusion_matrix`, :func:`plot_pr`,
  :func:`plot_confusion` (matplotlib, Agg).

Inputs, per image: ``dets`` (k, 6) ``[x1, y1, x2, y2, score, class]`` in darknet's per-image
detection order (the order matters for the P/R at ``thresh``), ``gts`` (n, 5)
``[x1, y1, x2, y2, class]`` in label-file order; both in the same units (image pixels).

Like pycocotools' evaluate()/accumulate(), the work is split in two vectorised halves: matching
(every detection against the gt of its image and class, all images at once) and integration
(one cumulative sum per class over the global ranking).

darknet's rules (each is tested by a case it changes):

* a detection matches the same-class gt of **maximum** IoU among those with IoU **>**
  ``iou_thresh`` (strict), first in label order on a tie - even when that gt is already taken;
* all detections are ranked by score (darknet's qsort; glibc's is a stable merge sort, kept
  here: equal scores stay in image order, then detection order); in rank order a detection
  whose gt is still free is a TP and takes it, one whose gt is taken is a **FP** (no fallback
  to its second-best gt), one without a gt is a FP;
* precision/recall of class c at each rank: ``tp/(tp+fp)``, ``tp/n_gt(c)`` (0 without gt);
* ``points=0``: area under the precision envelope at every recall step (VOC 2010+); ``points=N``:
  mean over ``r = p/(N-1)`` of the largest precision at recall >= r (11: VOC 2007, 101: COCO);
* mAP is the mean over **all** ``num_classes`` classes: a class without gt counts as AP 0;
* TP/FP/precision/recall/F1/average IoU at ``thresh`` (``score > thresh``) are counted in
  per-image detection order: a detection is a TP if it has a gt and no *earlier detection of
  its image* - of any score, even one under ``thresh`` - has the same gt.  Average IoU divides
  the TPs' IoU by TP + FP.  These are float32 in darknet and are computed so here.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DarkcfgError
from ..outputs import atomic_output

__all__ = ["MapResult", "darknet_map", "KeypointResult", "keypoint_map", "coco_metrics",
           "save_detections", "confusion_matrix", "plot_pr", "plot_confusion"]


# ----- inputs ---------------------------------------------------------------------------------


def _stack(per_image: list, width: int, what: str) -> tuple:
    """Concatenate per-image arrays -> (rows float64 (N, width), image index of each row)."""
    arrays = []
    for i, a in enumerate(per_image):
        a = np.asarray(a, dtype=np.float64)
        if a.size == 0:
            a = a.reshape(0, width)
        if a.ndim != 2 or a.shape[1] != width:
            raise DarkcfgError(f"{what} of image {i}: expected an (n, {width}) array, got shape "
                               f"{a.shape}")
        arrays.append(a)
    rows = np.concatenate(arrays) if arrays else np.zeros((0, width))
    image = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    return rows, image


def _classes(column: np.ndarray, image: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    cls = column.astype(np.int64)
    bad = (cls != column) | (cls < 0) | (cls >= num_classes)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DarkcfgError(f"{what} of image {int(image[k])}: class {column[k]:g} is not one of "
                           f"the {num_classes} classes 0..{num_classes - 1}")
    return cls


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """darknet's box_iou on corner boxes, row by row: 0 when the intersection or the union is
    0 (zero-size boxes), never NaN."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.where((iw < 0) | (ih < 0), 0.0, iw * ih)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) \
        - inter
    ok = (inter != 0) & (union != 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


# ----- half 1: matching ----------------------------------------------------------------------


def _match(det, det_img, det_cls, gt, gt_img, gt_cls, num_classes, iou_thresh):
    """Each detection's gt (global gt index, -1 for none) and IoU with it: the same-class gt of
    its image with the largest IoU > iou_thresh, the first in label order on a tie."""
    n = len(det)
    matched = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n, dtype=np.float32)
    if n == 0 or len(gt) == 0:
        return matched, best
    gkey = gt_img * num_classes + gt_cls
    gorder = np.argsort(gkey, kind="stable")           # label order kept within (image, class)
    gkey_sorted = gkey[gorder]
    dkey = det_img * num_classes + det_cls
    start = np.searchsorted(gkey_sorted, dkey, "left")
    count = np.searchsorted(gkey_sorted, dkey, "right") - start
    pairs = int(count.sum())
    if pairs == 0:
        return matched, best
    d = np.repeat(np.arange(n), count)                                  # (P,) ascending
    first = np.cumsum(count) - count
    g = gorder[np.repeat(start, count) + np.arange(pairs) - np.repeat(first, count)]
    iou = _iou(det[d, :4], gt[g, :4]).astype(np.float32)    # darknet's IoU is a float...
    ok = iou > np.float32(iou_thresh)                # ...and so is its threshold; strictly >
    d, g, iou = d[ok], g[ok], iou[ok]
    if len(d) == 0:
        return matched, best
    # the largest IoU per detection, first pair (label order) on a tie
    order = np.lexsort((np.arange(len(d)), -iou, d))
    d, g, iou = d[order], g[order], iou[order]
    head = np.r_[True, d[1:] != d[:-1]]
    matched[d[head]] = g[head]
    best[d[head]] = iou[head]
    return matched, best


def _first_per_gt(gts_in_order: np.ndarray) -> np.ndarray:
    """Mask over a sequence of gt indices (-1 = none): True where a gt appears first."""
    out = np.zeros(len(gts_in_order), dtype=bool)
    has = np.flatnonzero(gts_in_order >= 0)
    if len(has):
        _, pos = np.unique(gts_in_order[has], return_index=True)
        out[has[pos]] = True
    return out


# ----- half 2: integration -------------------------------------------------------------------


def _seq_sum(values: np.ndarray) -> float:
    """Left-to-right float64 sum, as darknet's loop adds (np.sum is pairwise)."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


def _average_precision(tp: np.ndarray, n_gt: int, points: int) -> tuple:
    """(AP, recall, precision) of one class from its detections' TP flags in rank order."""
    if len(tp) == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    precision = ctp / (ctp + cfp)
    recall = ctp / n_gt if n_gt > 0 else np.zeros(len(tp))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if points == 0:
        # darknet walks the ranks backwards: += (recall[r+1] - recall[r]) * max precision at
        # ranks >= r, then the rest of the area, recall[0] * that maximum
        terms = np.r_[((recall[1:] - recall[:-1]) * envelope[:-1])[::-1],
                      recall[0] * envelope[0]]
        return _seq_sum(terms), recall, precision
    at = np.array([p * 1.0 / (points - 1) for p in range(points)])
    idx = np.searchsorted(recall, at, "left")          # first rank with recall >= r
    best = np.where(idx < len(tp), envelope[np.minimum(idx, len(tp) - 1)], 0.0)
    return _seq_sum(best) / points, recall, precision


# ----- the result ------------------------------------------------------------------------------


def _f32(x):
    return np.float32(x)


def _c(fmt: str, x) -> str:
    """C printf of one float: glibc prints NaN as 'nan' or '-nan' (x86's 0/0 is -nan)."""
    x = float(x)
    if x != x:
        text = "-nan" if np.signbit(x) else "nan"
        width = fmt[1:].split(".")[0]
        return text.rjust(int(width)) if width else text
    return fmt % x


@dataclass(kw_only=True)
class _Scores:
    """What a box map and a keypoint map both report.  ``ap``, ``tp``, ``fp``, ``gt``,
    ``detections`` are per class; ``total_*``/``precision``/``recall``/``f1`` are at
    ``thresh``; ``curves`` per class (recall, precision, score)."""
    map: float
    ap: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    gt: np.ndarray
    detections: np.ndarray
    total_tp: int
    total_fp: int
    total_fn: int
    precision: float
    recall: float
    f1: float
    detections_count: int
    unique_truth_count: int
    thresh: float
    points: int
    curves: list = field(default_factory=list, repr=False)
    names: list | None = None

    @property
    def num_classes(self) -> int:
        return len(self.ap)

    def _name(self, i: int, names) -> str:
        names = names if names is not None else self.names
        return str(names[i]) if names is not None and i < len(names) else str(i)

    def _lines(self, names, class_extra, thresh, totals_extra) -> list:
        """darknet's lines up to its totals: the counts, a line per class (``class_extra(i)``
        inside its parentheses), P/R/F1 and TP/FP/FN at ``thresh``, then ``totals_extra``."""
        out = [f"\n detections_count = {self.detections_count}, unique_truth_count = "
               f"{self.unique_truth_count}  \n"]
        for i in range(self.num_classes):
            out.append("class_id = %d, name = %s, ap = %2.2f%%   \t (TP = %d, FP = %d%s) \n"
                       % (i, self._name(i, names), self.ap[i] * 100, self.tp[i], self.fp[i],
                          class_extra(i)))
        out.append("\n for conf_thresh = %1.2f, precision = %s, recall = %s, F1-score = %s \n"
                   % (thresh, _c("%1.2f", self.precision), _c("%1.2f", self.recall),
                      _c("%1.2f", self.f1)))
        out.append(" for conf_thresh = %0.2f, TP = %d, FP = %d, FN = %d, %s \n"
                   % (thresh, self.total_tp, self.total_fp, self.total_fn, totals_extra))
        return out

    def _points_line(self) -> str:
        return (f"used {self.points} Recall-points \n" if self.points
                else "used Area-Under-Curve for each unique Recall \n")

    def _dict(self, names, head: dict, totals: dict, class_extra) -> dict:
        """as_dict's shape: ``head`` after "map", the common figures, ``totals`` after "fn",
        the counts, then per class (``class_extra(i)`` added to each)."""
        return {
            "map": self.map, **head, "points": self.points, "thresh": self.thresh,
            "precision": _num(self.precision), "recall": _num(self.recall),
            "f1": _num(self.f1), "tp": self.total_tp, "fp": self.total_fp, "fn": self.total_fn,
            **totals, "detections_count": self.detections_count,
            "unique_truth_count": self.unique_truth_count,
            "classes": [{"id": i, "name": self._name(i, names), "ap": float(self.ap[i]),
                         "tp": int(self.tp[i]), "fp": int(self.fp[i]), "gt": int(self.gt[i]),
                         "detections": int(self.detections[i]), **class_extra(i)}
                        for i in range(self.num_classes)],
        }


def _num(x):
    """A JSON number: NaN -> None."""
    x = float(x)
    return None if x != x else x


@dataclass(kw_only=True)
class MapResult(_Scores):
    """What ``darknet detector map`` computes (see :class:`_Scores`); ``avg_iou`` at
    ``thresh``, matches at IoU > ``iou_thresh``."""
    avg_iou: float
    iou_thresh: float

    def format(self, names=None) -> str:
        """darknet's printed lines, from ``detections_count`` to the mAP line, byte for byte."""
        iou_t = _f32(self.iou_thresh)
        out = self._lines(names, lambda i: "", float(_f32(self.thresh)),   # darknet's floats
                          "average IoU = %s %%" % _c("%2.2f", _f32(self.avg_iou) * _f32(100)))
        out.append("\n IoU threshold = %2.0f %%, " % (iou_t * _f32(100)))
        out.append(self._points_line())
        out.append(" mean average precision (mAP@%0.2f) = %f, or %2.2f %% \n"
                   % (iou_t, self.map, self.map * 100))
        return "".join(out)

    def as_dict(self, names=None) -> dict:
        return self._dict(names, {"iou_thresh": self.iou_thresh},
                          {"avg_iou": _num(self.avg_iou)}, lambda i: {})


# ----- darknet's detector map ------------------------------------------------------------------


def darknet_map(dets, gts, num_classes: int, *, iou_thresh: float = 0.5, thresh: float = 0.25,
                points: int = 0, names=None) -> MapResult:
    """darknet's ``detector map`` figures from detections and ground truth (module docstring)."""
    if num_classes < 1:
        raise DarkcfgError(f"num_classes must be at least 1, got {num_classes}")
    if points < 0 or points == 1:
        raise DarkcfgError(f"points must be 0 (area under the curve) or at least 2, got {points}")
    if len(dets) != len(gts):
        raise DarkcfgError(f"{len(dets)} images of detections but {len(gts)} of ground truth")
    det, det_img = _stack(dets, 6, "detections")
    gt, gt_img = _stack(gts, 5, "ground truth")
    det_cls = _classes(det[:, 5], det_img, num_classes, "detections")
    gt_cls = _classes(gt[:, 4], gt_img, num_classes, "ground truth")
    score = det[:, 4].astype(np.float32)               # darknet's probabilities are floats
    n_gt = np.bincount(gt_cls, minlength=num_classes)

    matched, best = _match(det, det_img, det_cls, gt, gt_img, gt_cls, num_classes, iou_thresh)

    # P/R at thresh, in per-image detection order: the first detection (any score) of a gt
    # owns it; a later one above thresh is a FP even if the owner is under thresh
    above = score > np.float32(thresh)
    tp_t = above & (matched >= 0) & _first_per_gt(matched)
    fp_t = above & ~tp_t
    tp_c = np.bincount(det_cls[tp_t], minlength=num_classes)
    fp_c = np.bincount(det_cls[fp_t], minlength=num_classes)
    tp, fp = int(tp_t.sum()), int(fp_t.sum())
    iou_sum = np.cumsum(best[tp_t], dtype=np.float32)
    avg_iou = iou_sum[-1] if len(iou_sum) else np.float32(0)
    if tp + fp > 0:
        avg_iou = avg_iou / _f32(tp + fp)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = _f32(tp) / (_f32(tp) + _f32(fp))
        r = _f32(tp) / (_f32(tp) + _f32(len(gt) - tp))
        f1 = _f32(2) * p * r / (p + r)

    # the global ranking, then one cumulative sum per class
    rank = np.argsort(-score, kind="stable")
    tp_rank = _first_per_gt(matched[rank])
    cls_rank = det_cls[rank]
    by_class = np.argsort(cls_rank, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(cls_rank, minlength=num_classes))]
    ap = np.zeros(num_classes)
    curves = []
    for c in range(num_classes):
        sel = by_class[bounds[c]:bounds[c + 1]]
        ap[c], rec, prec = _average_precision(tp_rank[sel], int(n_gt[c]), points)
        curves.append((rec, prec, score[rank[sel]]))
    return MapResult(
        map=_seq_sum(ap) / num_classes, ap=ap, tp=tp_c, fp=fp_c, gt=n_gt,
        detections=np.bincount(det_cls, minlength=num_classes), total_tp=tp, total_fp=fp,
        total_fn=len(gt) - tp, precision=float(p), recall=float(r), f1=float(f1),
        avg_iou=float(avg_iou), detections_count=len(det), unique_truth_count=len(gt),
        iou_thresh=float(iou_thresh), thresh=float(thresh), points=int(points), curves=curves,
        names=list(names) if names is not None else None)


# ----- keypoints -------------------------------------------------------------------------------
#
# The keypoint model has no boxes, so no IoU: a prediction (x, y, score, class) matches a gt
# point (x, y, class) of its image and class within ``radius`` (distance <= radius, same units,
# darkcfg uses network-input pixels).  Matching is greedy by confidence, COCO's way rather than
# darknet's: in the global ranking (score descending, ties in image then prediction order) each
# prediction takes the *nearest still unmatched* gt within the radius (first in label order on
# a tie) and is a TP, else it is a FP.  Because the ranking is by score, the matches of the
# predictions above ``thresh`` are exactly those of this one pass (a prefix of it), so AP and
# the counts at ``thresh`` agree.  AP per class is darknet's integration (``points``) of the
# precision/recall of that ranking; mAP the mean over all classes (no gt: AP 0).


def _match_points(det, det_img, det_cls, gt, gt_img, gt_cls, radius, rank):
    """Greedy nearest-unmatched matching in ``rank`` order -> (gt index per prediction or -1,
    distance to it or NaN)."""
    matched = np.full(len(det), -1, dtype=np.int64)
    dist = np.full(len(det), np.nan)
    if not len(det) or not len(gt):
        return matched, dist
    groups = {}
    for g, key in enumerate(zip(gt_img.tolist(), gt_cls.tolist())):
        groups.setdefault(key, []).append(g)
    groups = {k: np.asarray(v) for k, v in groups.items()}
    free = np.ones(len(gt), bool)
    r = float(radius)
    for k in rank:
        cand = groups.get((int(det_img[k]), int(det_cls[k])))
        if cand is None:
            continue
        d = np.hypot(gt[cand, 0] - det[k, 0], gt[cand, 1] - det[k, 1])
        d = np.where(free[cand] & (d <= r), d, np.inf)
        j = int(np.argmin(d))                       # first in label order on a tie
        if d[j] != np.inf:
            matched[k], dist[k] = cand[j], d[j]
            free[cand[j]] = False
    return matched, dist


def _px(x, units: str) -> str:
    """A localisation error: '1.23 px', or 'n/a' without any match."""
    x = float(x)
    return "n/a" if x != x else f"{x:.2f} {units}"


@dataclass(kw_only=True)
class KeypointResult(_Scores):
    """:func:`keypoint_map`'s figures (see :class:`_Scores`; at ``thresh``: score > thresh);
    ``loc_error``: mean distance of the matches at ``thresh`` to their gt (NaN without any),
    ``class_loc_error`` per class; matches within ``radius`` ``units``."""
    loc_error: float
    class_loc_error: np.ndarray
    radius: float
    units: str = "px"

    @property
    def title(self) -> str:
        return f"mAP@{self.radius:g}{self.units} = {self.map * 100:.2f} %"

    def format(self, names=None) -> str:
        """darknet-like lines: per class AP, then P/R/F1, counts and localisation error at
        thresh, then the mAP."""
        out = self._lines(names, lambda i: ", error = " + _px(self.class_loc_error[i], self.units),
                          self.thresh, "mean localisation error = "
                          + _px(self.loc_error, self.units))
        out.append(f"\n match radius = {self.radius:g} {self.units}, ")
        out.append(self._points_line())
        out.append(" mean average precision (mAP@%g%s) = %f, or %2.2f %% \n"
                   % (self.radius, self.units, self.map, self.map * 100))
        return "".join(out)

    def as_dict(self, names=None) -> dict:
        return self._dict(names, {"radius": self.radius, "units": self.units},
                          {"loc_error": _num(self.loc_error)},
                          lambda i: {"loc_error": _num(self.class_loc_error[i])})


def keypoint_map(dets, gts, num_classes: int, *, radius: float, thresh: float = 0.25,
                 points: int = 0, names=None, units: str = "px") -> KeypointResult:
    """The keypoint metric (see the comment above).  ``dets``: per image (k, 4) ``[x, y, score,
    class]``; ``gts``: per image (n, 3) ``[x, y, class]``; same units as ``radius``."""
    if num_classes < 1:
        raise DarkcfgError(f"num_classes must be at least 1, got {num_classes}")
    if points < 0 or points == 1:
        raise DarkcfgError(f"points must be 0 (area under the curve) or at least 2, got {points}")
    if not (float(radius) > 0 and np.isfinite(radius)):
        raise DarkcfgError(f"the match radius must be a positive number, got {radius}")
    if len(dets) != len(gts):
        raise DarkcfgError(f"{len(dets)} images of keypoints but {len(gts)} of ground truth")
    det, det_img = _stack(dets, 4, "keypoints")
    gt, gt_img = _stack(gts, 3, "ground truth")
    det_cls = _classes(det[:, 3], det_img, num_classes, "keypoints")
    gt_cls = _classes(gt[:, 2], gt_img, num_classes, "ground truth")
    score = det[:, 2]
    n_gt = np.bincount(gt_cls, minlength=num_classes)
    rank = np.argsort(-score, kind="stable")
    matched, dist = _match_points(det, det_img, det_cls, gt, gt_img, gt_cls, radius, rank)
    is_tp = matched >= 0

    above = score > thresh
    tp_t, fp_t = above & is_tp, above & ~is_tp
    tp_c = np.bincount(det_cls[tp_t], minlength=num_classes)
    fp_c = np.bincount(det_cls[fp_t], minlength=num_classes)
    err_c = np.bincount(det_cls[tp_t], weights=dist[tp_t], minlength=num_classes)
    tp, fp = int(tp_t.sum()), int(fp_t.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        class_err = err_c / tp_c
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / len(gt) if len(gt) else float("nan")
        f1 = 2 * p * r / (p + r) if p + r > 0 else float("nan")
    err = float(dist[tp_t].mean()) if tp else float("nan")

    cls_rank = det_cls[rank]
    ap = np.zeros(num_classes)
    curves = []
    for c in range(num_classes):
        sel = rank[cls_rank == c]
        ap[c], rec, prec = _average_precision(is_tp[sel], int(n_gt[c]), points)
        curves.append((rec, prec, score[sel]))
    return KeypointResult(
        map=_seq_sum(ap) / num_classes, ap=ap, tp=tp_c, fp=fp_c, gt=n_gt,
        detections=np.bincount(det_cls, minlength=num_classes), total_tp=tp, total_fp=fp,
        total_fn=len(gt) - tp, precision=float(p), recall=float(r), f1=float(f1),
        loc_error=err, class_loc_error=class_err, detections_count=len(det),
        unique_truth_count=len(gt), radius=float(radius), thresh=float(thresh),
        points=int(points), units=units, curves=curves,
        names=list(names) if names is not None else None)


# ----- COCO, by pycocotools -------------------------------------------------------------------

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
              "ARl")


def coco_results(dets, image_ids=None, category_ids=None) -> list:
    """COCO results json entries (``bbox`` = [x, y, w, h]) for per-image (k, 6) detections;
    ``image_ids`` default 0..n-1, ``category_ids`` (indexed by class) default the class."""
    det, det_img = _stack(dets, 6, "detections")
    ids = np.arange(len(dets)) if image_ids is None else np.asarray(image_ids)
    cls = det[:, 5].astype(np.int64)
    cats = cls if category_ids is None else np.asarray(category_ids)[cls]
    return [{"image_id": int(ids[i]), "category_id": int(c),
             "bbox": [round(float(x1), 3), round(float(y1), 3), round(float(x2 - x1), 3),
                      round(float(y2 - y1), 3)], "score": round(float(s), 5)}
            for i, c, (x1, y1, x2, y2, s, _) in zip(det_img, cats, det)]


def coco_ground_truth(gts, num_classes: int, image_sizes=None, names=None) -> dict:
    """A COCO annotation dict from per-image (n, 5) boxes; ``area`` is the box area (darknet
    labels carry no segmentation), ``iscrowd`` 0; image i has id i, class c category id c."""
    gt, gt_img = _stack(gts, 5, "ground truth")
    sizes = image_sizes if image_sizes is not None else [(0, 0)] * len(gts)
    images = [{"id": i, "width": int(w), "height": int(h)} for i, (w, h) in enumerate(sizes)]
    anns = [{"id": k + 1, "image_id": int(i), "category_id": int(c),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
             "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0}
            for k, (i, (x1, y1, x2, y2, c)) in enumerate(zip(gt_img, gt))]
    cats = [{"id": c, "name": str(names[c]) if names is not None else str(c)}
            for c in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_metrics(dets, gts, num_classes: int, *, image_sizes=None, names=None) -> dict:
    """COCO's 12 numbers (AP = mAP@[.5:.95], AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l), computed
    by pycocotools' COCOeval on the same detections, plus ``text``: its summary lines.  A value
    pycocotools cannot compute (no gt in that area range) is -1, as it prints."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DarkcfgError("--coco needs pycocotools (pip install pycocotools)") from None
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        truth = COCO()
        truth.dataset = coco_ground_truth(gts, num_classes, image_sizes, names)
        truth.createIndex()
        results = coco_results(dets)
        found = truth.loadRes(results) if results else COCO()
        if not results:                  # loadRes refuses an empty list
            found.dataset = {"images": truth.dataset["images"], "annotations": [],
                             "categories": truth.dataset["categories"]}
            found.createIndex()
        ev = COCOeval(truth, found, "bbox")
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    out = {k: float(v) for k, v in zip(COCO_STATS, ev.stats)}
    out["text"] = summary.getvalue()
    return out


def save_detections(path: str, dets, *, image_ids=None, category_ids=None,
                    force: bool = True) -> int:
    """Write COCO-format results (a json list) atomically; returns the number written."""
    results = coco_results(dets, image_ids, category_ids)
    with atomic_output(path, force) as tmp:
        with open(tmp, "w") as f:
            json.dump(results, f)
    return len(results)


# ----- confusion matrix and pictures ----------------------------------------------------------


def confusion_matrix(dets, gts, num_classes: int, *, thresh: float = 0.25,
                     iou_thresh: float = 0.5) -> np.ndarray:
    """(C+1, C+1) counts, rows = true class, columns = predicted class, index C = background.

    Per image, the detections with score > ``thresh`` and the gt boxes are paired greedily by
    IoU (largest first, any classes, IoU > ``iou_thresh``, each box used once); an unpaired gt
    counts as (class, background), an unpaired detection as (background, class)."""
    det, det_img = _stack(dets, 6, "detections")
    gt, gt_img = _stack(gts, 5, "ground truth")
    det_cls = _classes(det[:, 5], det_img, num_classes, "detections")
    gt_cls = _classes(gt[:, 4], gt_img, num_classes, "ground truth")
    keep = det[:, 4].astype(np.float32) > np.float32(thresh)
    det, det_img, det_cls = det[keep], det_img[keep], det_cls[keep]
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    bg = num_classes
    d_start = np.searchsorted(det_img, np.arange(len(dets) + 1))
    g_start = np.searchsorted(gt_img, np.arange(len(gts) + 1))
    for i in range(len(gts)):
        ds, gs = slice(d_start[i], d_start[i + 1]), slice(g_start[i], g_start[i + 1])
        nd, ng = ds.stop - ds.start, gs.stop - gs.start
        used_d, used_g = np.zeros(nd, bool), np.zeros(ng, bool)
        if nd and ng:
            a, b = np.meshgrid(np.arange(nd), np.arange(ng), indexing="ij")
            iou = _iou(det[ds][a.ravel(), :4], gt[gs][b.ravel(), :4])
            for k in np.argsort(-iou, kind="stable"):
                if iou[k] <= iou_thresh:
                    break
                di, gi = divmod(int(k), ng)
                if not used_d[di] and not used_g[gi]:
                    used_d[di] = used_g[gi] = True
                    m[gt_cls[gs][gi], det_cls[ds][di]] += 1
        np.add.at(m, (gt_cls[gs][~used_g], bg), 1)
        np.add.at(m, (bg, det_cls[ds][~used_d]), 1)
    return m


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:60]


def plot_pr(result: MapResult, out_dir: str, names=None) -> list:
    """Precision-recall curves: ``pr_curve.png`` (every class with gt, the 10 best labelled)
    and ``pr_<id>_<name>.png`` per class with gt or detections.  Returns the paths written."""
    plt = _pyplot()
    if not os.path.isdir(out_dir):
        raise DarkcfgError(f"{out_dir}: not a folder")
    written = []
    fig, ax = plt.subplots(figsize=(7, 6))
    top = set(np.argsort(-result.ap)[:10].tolist())
    for c, (rec, prec, _) in enumerate(result.curves):
        if result.gt[c] == 0 or len(rec) == 0:
            continue
        label = f"{result._name(c, names)} {result.ap[c] * 100:.1f}" if c in top else None
        ax.plot(rec, prec, lw=1.2 if c in top else 0.6, color=None if c in top else "0.7",
                label=label)
    title = getattr(result, "title", None) or \
        f"mAP@{result.iou_thresh:.2f} = {result.map * 100:.2f} %"
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    if top:
        ax.legend(fontsize=7, loc="lower left")
    path = os.path.join(out_dir, "pr_curve.png")
    _save(fig, path)
    plt.close(fig)
    written.append(path)
    for c, (rec, prec, _) in enumerate(result.curves):
        if result.gt[c] == 0 and len(rec) == 0:
            continue
        fig, ax = plt.subplots(figsize=(5, 4.5))
        if len(rec):
            env = np.maximum.accumulate(prec[::-1])[::-1]
            ax.plot(rec, prec, lw=1, label="precision")
            ax.plot(rec, env, lw=1, ls="--", label="envelope")
            ax.legend(fontsize=7, loc="lower left")
        name = result._name(c, names)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{c} {name}: AP {result.ap[c] * 100:.2f} % ({result.gt[c]} gt)")
        path = os.path.join(out_dir, f"pr_{c}_{_safe(name)}.png")
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_confusion(matrix: np.ndarray, path: str, names=None, normalize: bool = True) -> str:
    """Draw a :func:`confusion_matrix` (rows true, columns predicted; last = background), each
    row divided by its total when ``normalize``; write it as PNG to ``path``."""
    plt = _pyplot()
    n = len(matrix) - 1
    labels = [str(names[i]) if names is not None and i < len(names) else str(i)
              for i in range(n)] + ["background"]
    shown = matrix.astype(float)
    if normalize:
        shown = shown / np.maximum(shown.sum(1, keepdims=True), 1)
    size = min(20, 3 + 0.35 * (n + 1))
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ticks = np.arange(n + 1)
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7 if n < 30 else 4)
    ax.set_yticks(ticks, labels, fontsize=7 if n < 30 else 4)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" +
           (" (row-normalized)" if normalize else ""))
    if n <= 20:
        for (r, c), v in np.ndenumerate(matrix):
            if v:
                ax.text(c, r, str(v), ha="center", va="center", fontsize=6,
                        color="white" if shown[r, c] > 0.5 else "black")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
