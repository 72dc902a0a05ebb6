"""Writes darkcfg's bundled cfgs: ``python cfgs/generate.py``.

The networks are darknet's own (same layers, same order, so darknet's weights files fit them);
the text is written here from a description of the architecture, not copied.
"""
from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))

YOLOV3_ANCHORS = "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326"
TINY_ANCHORS = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"


def net(width, height, **extra):
    opts = dict(batch=1, subdivisions=1, width=width, height=height, channels=3,
                momentum=0.9, decay=0.0005, **extra)
    return section("net", **opts)


def section(name, **opts):
    return "\n".join([f"[{name}]"] + [f"{k}={v}" for k, v in opts.items()]) + "\n"


def conv(filters, size=1, stride=1, act="leaky", bn=True):
    opts = dict(batch_normalize=1) if bn else {}
    opts.update(filters=filters, size=size, stride=stride, pad=1, activation=act)
    return section("convolutional", **opts)


def head_conv(filters):
    """The 1x1 detection conv: linear, bias instead of batch norm."""
    return conv(filters, 1, 1, "linear", bn=False)


def yolo(mask, anchors, num):
    return section("yolo", mask=mask, anchors=anchors, classes=80, num=num, jitter=0.3,
                   ignore_thresh=0.7, truth_thresh=1, random=1)


def darknet53_backbone():
    """Conv 3x3/32, then five stages: a stride-2 3x3 conv and N residual blocks (1x1 conv to half
    the width, 3x3 conv back, shortcut).  75 layers, 52 convs; stage outputs at layers 36, 61, 74."""
    out = [conv(32, 3)]
    for width, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        out.append("# downsample to stride x2\n" + conv(width, 3, 2))
        for _ in range(blocks):
            out += [conv(width // 2, 1), conv(width, 3), section("shortcut", **{"from": -3},
                                                                 activation="linear")]
    return out


def block5(width):
    """The FPN's shared 1-3-1-3-1 conv block."""
    return [conv(width, 1), conv(width * 2, 3), conv(width, 1), conv(width * 2, 3), conv(width, 1)]


def keypoint(classes=80):
    return section("keypoint", classes=classes, head="separate", tower=4, tower_filters=256,
                   sigma=1.0, loss="bce")


def yolov3(reference=False, keypoints=False):
    parts = [net(416, 416, angle=0, saturation=1.5, exposure=1.5, hue=0.1, learning_rate=0.001,
                 burn_in=1000, max_batches=500200, policy="steps", steps="400000,450000",
                 scales=".1,.1")]
    parts += darknet53_backbone()
    masks = ("6,7,8", "3,4,5", "0,1,2")
    skips = (61, 36)
    parts.append("# FPN level 0 (stride 32)\n" + block5(512)[0])
    parts += block5(512)[1:]
    for level, width in enumerate((512, 256, 128)):
        out = conv(width * 2, 3)
        head = head_conv(255)
        y = yolo(masks[level], YOLOV3_ANCHORS, 9)
        last = level == 2
        if keypoints:       # [keypoint] owns its towers: it replaces the head conv and [yolo]
            parts += [out, keypoint()] if last else [
                out, section("route", layers=-2), conv(width // 2, 1),
                section("upsample", stride=2), section("route", layers=-4), keypoint(),
                section("route", layers=f"-3,{skips[level]}")]
            if not last:
                nxt = block5(width // 2)
                parts.append(f"# FPN level {level + 1} (stride {32 >> (level + 1)})\n" + nxt[0])
                parts += nxt[1:]
            continue
        up = conv(width // 2, 1)
        ups = section("upsample", stride=2)
        if not reference:
            parts += [out, head, y]
            if not last:
                parts += [section("route", layers=-4), up, ups,
                          section("route", layers=f"-1,{skips[level]}")]
        elif last:
            parts += [out, head, y]
        else:
            # up branch first: route back to the block end, 1x1 conv + upsample; then route to
            # the 3x3 out conv for the head; then concat the upsampled map with the skip
            parts += [out, section("route", layers=-2), up, ups, section("route", layers=-4),
                      head, y, section("route", layers=f"-4,{skips[level]}")]
        if not last:
            nxt = block5(width // 2)
            parts.append(f"# FPN level {level + 1} (stride {32 >> (level + 1)})\n" + nxt[0])
            parts += nxt[1:]
    return parts


def yolov3_tiny():
    parts = [net(416, 416, angle=0, saturation=1.5, exposure=1.5, hue=0.1, learning_rate=0.001,
                 burn_in=1000, max_batches=500200, policy="steps", steps="400000,450000",
                 scales=".1,.1")]
    for width in (16, 32, 64, 128, 256):
        parts += [conv(width, 3), section("maxpool", size=2, stride=2)]
    parts += [conv(512, 3), "# size 2, stride 1: pads right/bottom only\n"
              + section("maxpool", size=2, stride=1), conv(1024, 3),
              conv(256, 1), conv(512, 3), head_conv(255), yolo("3,4,5", TINY_ANCHORS, 6),
              section("route", layers=-4), conv(128, 1), section("upsample", stride=2),
              section("route", layers="-1,8"), conv(256, 3), head_conv(255),
              yolo("0,1,2", TINY_ANCHORS, 6)]
    return parts


def darknet53():
    parts = [net(256, 256, burn_in=1000, learning_rate=0.1, policy="poly", power=4,
                 max_batches=800000, angle=7, hue=0.1, saturation=0.75, exposure=0.75,
                 aspect=0.75, min_crop=128, max_crop=448)]
    parts += darknet53_backbone()
    parts += ["# classifier: layers 0-74 are the detector backbone (darknet53.conv.74)\n"
              + section("avgpool"), conv(1000, 1, 1, "linear", bn=False),
              section("softmax", groups=1)]
    return parts


HEADERS = {
    "yolov3.cfg": "darknet's YOLOv3 (COCO, 80 classes): Darknet-53 backbone + 3-level FPN.\n"
                  "Same layers in the same order as darknet's yolov3.cfg: yolov3.weights fits.",
    "yolo_ref.cfg": "darkcfg's reference network (design notes, 'weights convert').\n"
                    "YOLOv3, except that at the two upper FPN levels the up-branch 1x1 conv is\n"
                    "listed BEFORE the detection-head 1x1 conv (conv59/conv60 and conv67/conv68\n"
                    "swapped, convs counted from 1 in cfg order).  [route] layers keep the data\n"
                    "flow identical, so this computes exactly yolov3's function (109 layers\n"
                    "instead of 107, same params and BFLOPs).  darknet's yolov3.weights follows\n"
                    "yolov3.cfg's order: load it with --weights-cfg cfgs/yolov3.cfg.",
    "yolov3-tiny.cfg": "darknet's YOLOv3-tiny (COCO, 80 classes); same layers and order.",
    "yolo_kp.cfg": "The design notes' keypoint model: yolo_ref's backbone and FPN, with an\n"
                   "anchor-free [keypoint] head (RetinaNet-style separate reg and cls towers)\n"
                   "at each level in place of the detection conv + [yolo].  The first 75 layers\n"
                   "are Darknet-53: darknet53.conv.74 loads with --cutoff 75.",
    "darknet53.cfg": "darknet's Darknet-53 ImageNet classifier (1000 classes).  Its first 75\n"
                     "layers are the YOLOv3 backbone: summary --cutoff 75.",
}


def write(name, parts):
    header = "".join(f"# {line}\n" for line in HEADERS[name].splitlines())
    text = header + "# Written by cfgs/generate.py.\n\n" + "\n".join(parts)
    with open(os.path.join(HERE, name), "w") as f:
        f.write(text)


if __name__ == "__main__":
    write("yolov3.cfg", yolov3())
    write("yolo_ref.cfg", yolov3(reference=True))
    write("yolov3-tiny.cfg", yolov3_tiny())
    write("yolo_kp.cfg", yolov3(reference=True, keypoints=True))
    write("darknet53.cfg", darknet53())
