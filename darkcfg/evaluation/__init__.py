"""Evaluation: running a model over a list (map), the metrics as pure functions, the plots.

- validate: collect, evaluate_model, run_map, main_map, collect_keypoints, evaluate_keypoints
- evaluate: darknet_map, keypoint_map, coco_metrics, confusion_matrix, plot_pr, plot_confusion

The submodules are imported on use (``from darkcfg.evaluation import validate``); this
file imports none of them.
"""
