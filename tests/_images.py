"""Known images for the augmentation and loader tests (test_augment.py, test_data.py): each
drawing returns the image and its label rows, so a test can run a step and find where the
drawn thing went; write_sample puts one on disk the way a data set holds it."""
from __future__ import annotations

import os

import numpy as np

BG, FG = 60, 250
DOT_SIGMA = 1.5


def canvas(w, h, rects=(), bg=BG, fg=FG):
    """A uniform image with filled rectangles given in pixels (x0, y0, x1, y1), x1/y1
    exclusive, and their labels [0, cx, cy, w, h]."""
    img = np.full((h, w, 3), bg, np.uint8)
    rows = []
    for x0, y0, x1, y1 in rects:
        img[y0:y1, x0:x1] = fg
        rows.append([0, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return img, np.asarray(rows, np.float64).reshape(-1, 5)


def dots(w, h, points, bg=20):
    """An image with a Gaussian dot (sigma DOT_SIGMA, peak 235 over ``bg``) in channel
    ``class`` at each (class, x, y) given in continuous pixels (pixel i covers [i, i + 1)),
    and the keypoint label rows [class, x / w, y / h, 0, 0]."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    img = np.full((h, w, 3), float(bg))
    for c, x, y in points:
        img[:, :, c] += 235 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * DOT_SIGMA ** 2))
    rows = [[c, x / w, y / h, 0, 0] for c, x, y in points]
    return (np.clip(np.rint(img), 0, 255).astype(np.uint8),
            np.asarray(rows, np.float64).reshape(-1, 5))


def write_sample(path, rgb, rows) -> str:
    """Write an RGB image (by its extension) and its darknet label file beside it: a line
    per row, ``class cx cy w h``, or ``class x y`` for a point (w = h = 0); values exact."""
    import cv2
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]))
    lines = []
    for c, *v in np.asarray(rows, np.float64).reshape(-1, 5).tolist():
        v = v[:2] if v[2] == v[3] == 0 else v
        lines.append(" ".join([str(int(c))] + [repr(x) for x in v]) + "\n")
    with open(os.path.splitext(path)[0] + ".txt", "w") as f:
        f.writelines(lines)
    return path
