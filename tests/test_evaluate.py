"""darknet's detector map, case by case: every expected value below is worked out by hand from
darknet's rules (validate_detector_map, AlexeyAB src/detector.c), and each quirk has a case
built so that the quirk changes the result."""
import json
import math
import os

import numpy as np
import pytest

from darkcfg.evaluation import evaluate as E
from darkcfg.errors import DarkcfgError


def D(*rows):
    """Detections of one image: rows (x1, y1, x2, y2, score, class)."""
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def G(*rows):
    """Ground truth of one image: rows (x1, y1, x2, y2, class)."""
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# one image, two gts of class 0, three detections: TP (.9), FP (.8), TP (.7)
#   precision 1, 1/2, 2/3; recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3
BASIC = ([D((0, 0, 10, 10, .9, 0), (50, 50, 60, 60, .8, 0), (20, 20, 30, 30, .7, 0))],
         [G((0, 0, 10, 10, 0), (20, 20, 30, 30, 0))])


@pytest.mark.parametrize("points, want", [
    (0, 0.5 * 1 + 0.5 * 2 / 3),                 # area under the envelope
    (11, (6 * 1 + 5 * 2 / 3) / 11),             # r = 0..0.5 -> 1, r = 0.6..1 -> 2/3
    (101, (51 * 1 + 50 * 2 / 3) / 101),         # r = 0..0.50 -> 1, r = 0.51..1 -> 2/3
])
def test_ap_by_hand_for_each_points_setting(points, want):
    r = E.darknet_map(*BASIC, 1, points=points)
    assert r.ap[0] == pytest.approx(want, abs=1e-12)
    assert r.map == pytest.approx(want, abs=1e-12)


def test_iou_must_be_strictly_greater_than_the_threshold():
    # IoU of [0,0,10,5] with [0,0,10,10] is exactly 50/100 = 0.5: darknet's '>' makes it a FP
    dets, gts = [D((0, 0, 10, 5, .9, 0))], [G((0, 0, 10, 10, 0))]
    assert E.darknet_map(dets, gts, 1, iou_thresh=0.5).ap[0] == 0.0
    assert E.darknet_map(dets, gts, 1, iou_thresh=0.49).ap[0] == 1.0


def test_same_class_is_required():
    dets, gts = [D((0, 0, 10, 10, .9, 1))], [G((0, 0, 10, 10, 0))]
    r = E.darknet_map(dets, gts, 2)
    assert r.ap.tolist() == [0.0, 0.0] and r.fp.tolist() == [0, 1]


def test_a_detection_whose_best_gt_is_taken_is_a_false_positive():
    # B's best gt is g0 (IoU 9.6/10.4), which A (higher score) took; g1 (IoU 9.4/10.6 > .5)
    # is free, but darknet does not fall back to it: B is a FP and g1 is never found.
    gts = [G((0, 0, 10, 10, 0), (1, 0, 11, 10, 0))]
    dets = [D((0, 0, 10, 10, .9, 0), (0.4, 0, 10.4, 10, .8, 0))]
    r = E.darknet_map(dets, gts, 1)
    assert r.ap[0] == pytest.approx(0.5)        # with a fallback it would be 1.0
    assert (r.tp[0], r.fp[0]) == (1, 1)


def test_the_max_iou_gt_is_chosen_not_the_first():
    # the detection overlaps g0 with IoU 0.6 and g1 with IoU 0.8 (both > .5): it takes g1, so a
    # second detection exactly on g0 is still a TP
    gts = [G((0, 0, 10, 10, 0), (2, 0, 12, 10, 0))]
    iou_g0 = 7.5 / 12.5
    iou_g1 = 9.5 / 10.5
    assert iou_g0 > 0.5 and iou_g1 > iou_g0
    dets = [D((2.5, 0, 12.5, 10, .9, 0), (0, 0, 10, 10, .8, 0))]
    r = E.darknet_map(dets, gts, 1)
    assert r.ap[0] == 1.0 and r.tp[0] == 2


def test_ranking_is_global_across_images():
    # image 0: its gt found at .5; image 1: a FP at .9 and its gt found at .3.
    # Ranks: .9 FP, .5 TP, .3 TP -> precision 0, 1/2, 2/3; recall 0, 1/2, 1 -> AP = 2/3
    # (per-image ranking would give 1 and 1/2... averaged 0.75)
    dets = [D((0, 0, 10, 10, .5, 0)), D((50, 50, 60, 60, .9, 0), (0, 0, 10, 10, .3, 0))]
    gts = [G((0, 0, 10, 10, 0)), G((0, 0, 10, 10, 0))]
    assert E.darknet_map(dets, gts, 1).ap[0] == pytest.approx(2 / 3)


def test_a_class_without_ground_truth_counts_as_zero():
    dets = [D((0, 0, 10, 10, .9, 0), (30, 30, 40, 40, .8, 2))]
    gts = [G((0, 0, 10, 10, 0))]
    r = E.darknet_map(dets, gts, 3)
    assert r.ap.tolist() == [1.0, 0.0, 0.0]
    assert r.map == pytest.approx(1 / 3)        # pycocotools would average class 0 only: 1.0


def test_thresh_counts_follow_per_image_detection_order():
    # two detections of one image on the same gt: D1 (score .1, under thresh) comes first in
    # the image's detection order and owns the gt, so D2 (.9) is a FP at thresh .25
    gts = [G((0, 0, 10, 10, 0))]
    first_low = [D((0, 0, 10, 10, .1, 0), (0, 0, 10, 9, .9, 0))]
    r = E.darknet_map(first_low, gts, 1, thresh=0.25)
    assert (r.total_tp, r.total_fp, r.total_fn) == (0, 1, 1)
    assert r.ap[0] == 1.0                       # the ranking still puts .9 first: mAP unchanged
    first_high = [D((0, 0, 10, 9, .9, 0), (0, 0, 10, 10, .1, 0))]
    r = E.darknet_map(first_high, gts, 1, thresh=0.25)
    assert (r.total_tp, r.total_fp, r.total_fn) == (1, 0, 0)
    assert r.avg_iou == pytest.approx(0.9, abs=1e-6)


def test_precision_recall_f1_and_average_iou_at_thresh():
    # 3 gts; above .25: a TP of IoU 1, a TP of IoU .8, a FP; under: one more TP (not counted)
    gts = [G((0, 0, 10, 10, 0), (20, 0, 30, 10, 0), (40, 0, 50, 10, 0))]
    dets = [D((0, 0, 10, 10, .9, 0), (20, 0, 30, 8, .8, 0), (70, 0, 80, 10, .7, 0),
              (40, 0, 50, 10, .2, 0))]
    r = E.darknet_map(dets, gts, 1, thresh=0.25)
    assert (r.total_tp, r.total_fp, r.total_fn) == (2, 1, 1)
    p, rc = 2 / 3, 2 / 3
    assert r.precision == pytest.approx(p, abs=1e-6)
    assert r.recall == pytest.approx(rc, abs=1e-6)
    assert r.f1 == pytest.approx(2 * p * rc / (p + rc), abs=1e-6)
    assert r.avg_iou == pytest.approx((1 + 0.8) / 3, abs=1e-6)   # divided by TP + FP


def test_printed_lines_are_darknets():
    r = E.darknet_map(*BASIC, 2, thresh=0.25)
    # darknet's format strings (TRAINING-FACTS.md section 4), filled in by hand
    want = ("\n detections_count = 3, unique_truth_count = 2  \n"
            "class_id = 0, name = cat, ap = 83.33%   \t (TP = 2, FP = 1) \n"
            "class_id = 1, name = dog, ap = 0.00%   \t (TP = 0, FP = 0) \n"
            "\n for conf_thresh = 0.25, precision = 0.67, recall = 1.00, F1-score = 0.80 \n"
            " for conf_thresh = 0.25, TP = 2, FP = 1, FN = 0, average IoU = 66.67 % \n"
            "\n IoU threshold = 50 %, used Area-Under-Curve for each unique Recall \n"
            " mean average precision (mAP@0.50) = 0.416667, or 41.67 % \n")
    assert r.format(["cat", "dog"]) == want
    r = E.darknet_map(*BASIC, 1, points=11, iou_thresh=0.75)
    assert "\n IoU threshold = 75 %, used 11 Recall-points \n" in r.format()
    assert " mean average precision (mAP@0.75) = " in r.format()


def test_nothing_above_thresh_prints_nan_as_glibc_does():
    r = E.darknet_map([D((0, 0, 10, 10, .1, 0))], [G((0, 0, 10, 10, 0))], 1)
    assert math.isnan(r.precision) and r.as_dict()["precision"] is None
    assert "precision = -nan, recall = 0.00, F1-score = -nan" in r.format()
    json.dumps(r.as_dict())                         # valid json, no NaN


def test_no_detections_and_no_ground_truth():
    r = E.darknet_map([D(), D()], [G(), G()], 3)
    assert r.map == 0.0 and r.detections_count == 0 and r.unique_truth_count == 0
    r = E.darknet_map([D()], [G((0, 0, 1, 1, 0))], 1)
    assert (r.map, r.total_fn) == (0.0, 1)


def test_zero_size_boxes_do_not_match_or_crash():
    r = E.darknet_map([D((5, 5, 5, 5, .9, 0))], [G((5, 5, 5, 5, 0))], 1, iou_thresh=0.0)
    assert r.ap[0] == 0.0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(DarkcfgError, match="image 0: class 3"):
        E.darknet_map([D()], [G((0, 0, 1, 1, 3))], 2)
    with pytest.raises(DarkcfgError, match=r"\(n, 6\)"):
        E.darknet_map([np.zeros((2, 5))], [G()], 2)
    with pytest.raises(DarkcfgError, match="points"):
        E.darknet_map([D()], [G()], 2, points=1)
    with pytest.raises(DarkcfgError, match="images"):
        E.darknet_map([D(), D()], [G()], 2)


def _reference_map(dets, gts, num_classes, iou_thresh=0.5):
    """darknet's loops written out plainly (detection by detection, rank by rank) - an
    independent slow version to check the vectorised one on random data."""
    items, truth_count, offset = [], [], 0
    for i, (d, g) in enumerate(zip(dets, gts)):
        for row in d:
            best, idx = 0.0, -1
            for j, t in enumerate(g):
                iw = min(row[2], t[2]) - max(row[0], t[0])
                ih = min(row[3], t[3]) - max(row[1], t[1])
                inter = 0.0 if iw < 0 or ih < 0 else iw * ih
                union = (row[2] - row[0]) * (row[3] - row[1]) + (t[2] - t[0]) * (t[3] - t[1]) \
                    - inter
                iou = np.float32(0 if inter == 0 or union == 0 else inter / union)
                if iou > np.float32(iou_thresh) and int(row[5]) == int(t[4]) and iou > best:
                    best, idx = iou, offset + j
            items.append((np.float32(row[4]), int(row[5]), idx))
        offset += len(g)
        truth_count += [int(t[4]) for t in g]
    items.sort(key=lambda it: -it[0])               # stable, like glibc's merge sort
    taken = set()
    n_gt = np.bincount(truth_count, minlength=num_classes)
    tp = np.zeros(num_classes, int)
    fp = np.zeros(num_classes, int)
    pr = []                                          # per rank, per class (precision, recall)
    for p, c, idx in items:
        if idx >= 0 and idx not in taken:
            taken.add(idx)
            tp[c] += 1
        else:
            fp[c] += 1
        pr.append([(tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0,
                    tp[k] / n_gt[k] if n_gt[k] else 0.0) for k in range(num_classes)])
    aps = []
    for k in range(num_classes):
        if not pr:
            aps.append(0.0)
            continue
        last_r, last_p = pr[-1][k][1], pr[-1][k][0]
        ap = 0.0
        for rank in range(len(pr) - 2, -1, -1):
            ap += (last_r - pr[rank][k][1]) * max(last_p, pr[rank][k][0])
            last_r, last_p = pr[rank][k][1], max(last_p, pr[rank][k][0])
        aps.append(ap + last_r * last_p)
    return aps


def test_vectorised_matching_agrees_with_darknets_loops_on_random_data():
    rng = np.random.default_rng(3)
    dets, gts = [], []
    for _ in range(25):
        g = rng.uniform(0, 80, (rng.integers(0, 6), 2))
        gts.append(np.c_[g, g + rng.uniform(5, 30, g.shape), rng.integers(0, 3, len(g))])
        k = rng.integers(0, 12)
        src = gts[-1][rng.integers(0, max(len(g), 1), k)] if len(g) else np.zeros((k, 5))
        jitter = rng.normal(0, 3, (k, 4))
        d = np.c_[src[:, :4] + jitter, rng.uniform(0, 1, k).round(2), rng.integers(0, 3, k)]
        dets.append(d)
    r = E.darknet_map(dets, gts, 3)
    assert r.ap == pytest.approx(_reference_map(dets, gts, 3), abs=1e-12)
    assert r.ap.max() > 0


# ----- COCO ------------------------------------------------------------------------------------


def _pycocotools_directly(dets, gts, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    truth = COCO()
    truth.dataset = {
        "images": [{"id": i} for i in range(len(gts))],
        "categories": [{"id": c} for c in range(num_classes)],
        "annotations": [{"id": n + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                        for n, (i, (x1, y1, x2, y2, c)) in enumerate(
                            (i, row) for i, g in enumerate(gts) for row in g)]}
    truth.createIndex()
    found = truth.loadRes([{"image_id": i, "category_id": int(c), "score": s,
                            "bbox": [x1, y1, x2 - x1, y2 - y1]}
                           for i, d in enumerate(dets) for x1, y1, x2, y2, s, c in d])
    ev = COCOeval(truth, found, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def test_coco_metrics_agree_with_pycocotools_run_directly():
    rng = np.random.default_rng(5)
    dets, gts = [], []
    for _ in range(12):
        g = rng.uniform(0, 300, (rng.integers(1, 5), 2))
        size = rng.choice([10, 50, 150], (len(g), 1)) * rng.uniform(0.8, 1.2, (len(g), 2))
        gts.append(np.c_[g, g + size, rng.integers(0, 2, len(g))])
        d = gts[-1][rng.integers(0, len(g), 6)]
        dets.append(np.c_[d[:, :4] + rng.normal(0, 2, (6, 4)), rng.uniform(0, 1, 6),
                          d[:, 4]])
    got = E.coco_metrics(dets, gts, 2)
    want = _pycocotools_directly(dets, gts, 2)
    assert [got[k] for k in E.COCO_STATS] == pytest.approx(list(want), abs=1e-9)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" \
        in got["text"]


def test_coco_by_hand():
    # one gt, one detection of IoU 0.62: a TP at IoU .50, .55, .60 of the ten thresholds
    gts = [G((0, 0, 100, 100, 0))]
    dets = [D((0, 0, 100, 62, .9, 0))]
    got = E.coco_metrics(dets, gts, 1)
    assert got["AP"] == pytest.approx(0.3)
    assert (got["AP50"], got["AP75"]) == (pytest.approx(1.0), 0.0)   # pycocotools' tp/(n+eps)
    assert got["APl"] == pytest.approx(0.3) and got["APs"] == -1.0    # no small gt: -1


def test_coco_results_and_save_detections(tmp_path):
    dets = [D((1, 2, 11, 22, .5, 1)), D()]
    path = tmp_path / "dets.json"
    assert E.save_detections(str(path), dets, image_ids=[42, 43], category_ids=[7, 9]) == 1
    assert json.loads(path.read_text()) == [{"image_id": 42, "category_id": 9,
                                             "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]


def test_coco_metrics_with_no_detections():
    got = E.coco_metrics([D()], [G((0, 0, 10, 10, 0))], 1)
    assert got["AP"] == 0.0


# ----- confusion matrix and pictures -----------------------------------------------------------


def test_confusion_matrix_by_hand():
    gts = [G((0, 0, 10, 10, 0), (20, 0, 30, 10, 1), (40, 0, 50, 10, 1))]
    dets = [D((0, 0, 10, 10, .9, 0),      # right class
              (20, 0, 30, 10, .8, 0),     # a class-1 object called class 0
              (60, 0, 70, 10, .7, 1),     # nothing there
              (40, 0, 50, 10, .1, 1))]    # under thresh: the third gt is missed
    m = E.confusion_matrix(dets, gts, 2, thresh=0.25)
    want = np.zeros((3, 3), int)
    want[0, 0] = 1
    want[1, 0] = 1
    want[2, 1] = 1
    want[1, 2] = 1
    assert m.tolist() == want.tolist()


def test_plots_write_pngs(tmp_path):
    r = E.darknet_map(*BASIC, 2, names=["cat", "dog"])
    paths = E.plot_pr(r, str(tmp_path))
    assert [p.split("/")[-1] for p in paths] == ["pr_curve.png", "pr_0_cat.png"]
    m = E.confusion_matrix(*BASIC, 2)
    E.plot_confusion(m, str(tmp_path / "confusion.png"), ["cat", "dog"])
    for p in paths + [str(tmp_path / "confusion.png")]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


# ----- keypoints: distance matching, worked by hand ------------------------------------------------

def KP(*rows):
    """Keypoint predictions of one image: rows (x, y, score, class)."""
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def KG(*rows):
    """Keypoint ground truth of one image: rows (x, y, class)."""
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


@pytest.mark.parametrize("points, want", [
    (0, 0.5 * 1 + 0.5 * 2 / 3), (11, (6 * 1 + 5 * 2 / 3) / 11), (101, (51 + 50 * 2 / 3) / 101)])
def test_keypoint_ap_by_hand(points, want):
    # gts at (10, 10) and (50, 50); predictions .9 at 3 px from the first (TP), .8 far away
    # (FP), .7 at 4 px from the second (TP: distance <= radius counts)
    dets = [KP((13, 10, .9, 0), (90, 90, .8, 0), (50, 54, .7, 0))]
    gts = [KG((10, 10, 0), (50, 50, 0))]
    r = E.keypoint_map(dets, gts, 1, radius=4, points=points)
    assert r.ap[0] == pytest.approx(want, abs=1e-12) and r.map == r.ap[0]
    assert (r.total_tp, r.total_fp, r.total_fn) == (2, 1, 0)
    assert r.loc_error == pytest.approx(3.5)
    assert (r.precision, r.recall) == (pytest.approx(2 / 3), 1.0)
    assert r.f1 == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))


def test_keypoint_radius_is_inclusive_and_in_the_given_units():
    dets, gts = [KP((3, 4, .9, 0))], [KG((0, 0, 0))]                    # 5 px away
    assert E.keypoint_map(dets, gts, 1, radius=5).ap[0] == 1.0
    assert E.keypoint_map(dets, gts, 1, radius=4.999).ap[0] == 0.0


def test_keypoint_greedy_by_confidence_takes_the_nearest_unmatched():
    # g0 (0, 0), g1 (6, 0).  A (.9) at (2, 0): nearest is g0. B (.8) at (1, 0): g0 is taken,
    # so it takes g1 (5 px <= 5): both TP.  (darknet's box rule - no fallback - would make B a
    # FP; the keypoint metric matches an *unmatched* gt.)  C (.7) at (0, 0): both taken, FP.
    dets = [KP((1, 0, .8, 0), (2, 0, .9, 0), (0, 0, .7, 0))]
    gts = [KG((0, 0, 0), (6, 0, 0))]
    r = E.keypoint_map(dets, gts, 1, radius=5)
    assert (r.total_tp, r.total_fp) == (2, 1)
    assert r.loc_error == pytest.approx((2 + 5) / 2)
    assert r.ap[0] == 1.0                       # both TPs rank above the FP
    # the order is by score, not by position in the list: C first would take g0
    dets = [KP((1, 0, .8, 0), (2, 0, .9, 0), (0, 0, .95, 0))]
    r = E.keypoint_map(dets, gts, 1, radius=5)
    # C (.95) takes g0 at 0 px; A (.9) at (2, 0): g1 at 4 px; B (.8): none free -> FP
    assert (r.total_tp, r.total_fp) == (2, 1) and r.loc_error == pytest.approx(2.0)


def test_keypoint_class_and_image_must_agree():
    dets = [KP((0, 0, .9, 1)), KP((0, 0, .8, 0))]
    gts = [KG((0, 0, 0)), KG()]
    r = E.keypoint_map(dets, gts, 2, radius=3)
    assert r.ap.tolist() == [0.0, 0.0] and r.total_tp == 0 and r.total_fp == 2
    assert r.fp.tolist() == [1, 1] and r.gt.tolist() == [1, 0]
    assert r.map == 0.0                          # class 1 has no gt: AP 0 in the mean


def test_keypoint_ranking_is_global_and_thresh_counts_above_it():
    # image 0: its gt found at .5; image 1: a FP at .9, its gt found at .2.
    # ranks .9 FP, .5 TP, .2 TP: precision 0, 1/2, 2/3, recall 0, 1/2, 1; the envelope is 2/3
    # at every rank -> AP 2/3 (ranked per image it would be (1 + 1/2) / 2)
    dets = [KP((0, 0, .5, 0)), KP((50, 50, .9, 0), (10, 10, .2, 0))]
    gts = [KG((1, 0, 0)), KG((10, 11, 0))]
    r = E.keypoint_map(dets, gts, 1, radius=2, thresh=0.25)
    assert r.ap[0] == pytest.approx(2 / 3)
    assert (r.total_tp, r.total_fp, r.total_fn) == (1, 1, 1)     # the .2 one is under thresh
    assert r.loc_error == pytest.approx(1.0)


def test_keypoint_format_json_and_empty():
    r = E.keypoint_map([KP((13, 10, .9, 0))], [KG((10, 10, 0), (20, 20, 1))], 2, radius=4)
    text = r.format(["dot", "cross"])
    assert "class_id = 0, name = dot, ap = 100.00%" in text
    assert "class_id = 1, name = cross, ap = 0.00%" in text
    assert "TP = 1, FP = 0, FN = 1, mean localisation error = 3.00 px" in text
    assert "mean average precision (mAP@4px) = 0.500000, or 50.00 %" in text
    d = json.loads(json.dumps(r.as_dict(["dot", "cross"])))
    assert d["map"] == 0.5 and d["radius"] == 4 and d["loc_error"] == 3.0
    assert d["classes"][1] == {"id": 1, "name": "cross", "ap": 0.0, "tp": 0, "fp": 0, "gt": 1,
                               "detections": 0, "loc_error": None}
    e = E.keypoint_map([KP()], [KG()], 1, radius=4)
    assert e.map == 0.0 and e.as_dict()["precision"] is None and "nan" in e.format()


@pytest.mark.parametrize("kwargs, words", [
    (dict(radius=0), "radius must be a positive number"),
    (dict(radius=float("nan")), "radius must be a positive number"),
    (dict(radius=4, points=1), "points must be 0"),
])
def test_keypoint_bad_arguments(kwargs, words):
    with pytest.raises(DarkcfgError, match=words):
        E.keypoint_map([KP()], [KG()], 1, **kwargs)


def test_keypoint_bad_inputs():
    with pytest.raises(DarkcfgError, match=r"keypoints of image 0: expected an \(n, 4\) array"):
        E.keypoint_map([np.zeros((1, 6))], [KG()], 1, radius=4)
    with pytest.raises(DarkcfgError, match="ground truth of image 0: class 3 is not one of"):
        E.keypoint_map([KP()], [KG((0, 0, 3))], 1, radius=4)


def test_keypoint_matching_agrees_with_a_plain_loop_on_random_data():
    rng = np.random.default_rng(5)
    dets, gts = [], []
    for _ in range(20):
        gts.append(KG(*[(rng.uniform(0, 40), rng.uniform(0, 40), rng.integers(3))
                        for _ in range(rng.integers(0, 6))]))
        dets.append(KP(*[(rng.uniform(0, 40), rng.uniform(0, 40), rng.random(), rng.integers(3))
                         for _ in range(rng.integers(0, 8))]))
    r = E.keypoint_map(dets, gts, 3, radius=6, thresh=0.0)
    # the plain loop: all predictions sorted by score; nearest free same-class gt within 6
    flat = sorted(((d[2], i, k) for i, ds in enumerate(dets) for k, d in enumerate(ds)),
                  key=lambda t: -t[0])
    free = {(i, j) for i, g in enumerate(gts) for j in range(len(g))}
    tp = fp = 0
    err = []
    for _, i, k in flat:
        x, y, _, c = dets[i][k]
        cand = [(np.hypot(gx - x, gy - y), j) for j, (gx, gy, gc) in enumerate(gts[i])
                if gc == c and (i, j) in free and np.hypot(gx - x, gy - y) <= 6]
        if cand:
            dist, j = min(cand)
            free.discard((i, j))
            tp += 1
            err.append(dist)
        else:
            fp += 1
    assert (r.total_tp, r.total_fp) == (tp, fp)
    assert r.loc_error == pytest.approx(np.mean(err))


def test_keypoint_plots(tmp_path):
    r = E.keypoint_map([KP((13, 10, .9, 0), (0, 0, .5, 1))], [KG((10, 10, 0), (1, 1, 1))], 2,
                       radius=4)
    written = E.plot_pr(r, str(tmp_path), ["a", "b"])
    assert {os.path.basename(p) for p in written} == {"pr_curve.png", "pr_0_a.png", "pr_1_b.png"}
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in written)
