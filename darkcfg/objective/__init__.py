"""The objective: YOLO decode/targets/loss/NMS, the keypoint head's targets/loss/decode, anchors.

- yolo: decode, decode_region, encode_targets, yolo_loss, nms, detections
- keypoint: encode, loss, decode, detect_keypoints, draw_points
- anchors: kmeans, label_files, write_cfg

The submodules are imported on use (``from darkcfg.objective import yolo``); this
file imports none of them.
"""
