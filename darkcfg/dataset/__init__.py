"""Data: .data files and labels, augmentation, the training loader, the demo set, image preparation.

- data: read_data, image_list, label_path, read_labels, check, Samples, TrainLoader
- augment: Options, augment_image, letter_box, mosaic - darknet's train-time augmentation
- demo: write - the synthetic demo set
- prepare: read_names, open_image, resize_image, letterbox_image, prepare, network_input -
    the network input, for detect, map and keypoint inference

The submodules are imported on use (``from darkcfg.dataset import data``); this
file imports none of them.
"""

# darkcfg's default for augment.Options.min_visible (train --min-visible): a box the jitter crop
# leaves with less than this share of its area inside is dropped (darknet's rule is 0).
MIN_VISIBLE = 0.1

# darkcfg's default for augment.Options.crop_aspect (train --crop-aspect): "image" - the jitter
# crop keeps the image's aspect ratio; darknet's rule, "darknet", moves its four edges apart.
CROP_ASPECT = "image"
CROP_ASPECTS = ("image", "darknet")
