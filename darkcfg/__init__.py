"""darkcfg: darknet .cfg files as exact PyTorch models.

``import darkcfg`` does not import torch; the torch parts load on first use::

    net = darkcfg.config.shapes.infer("cfgs/yolov3.cfg")  # torch-free summary data
    model = darkcfg.build_model("cfgs/yolov3.cfg")        # a torch.nn.Module
    model = darkcfg.load("out.pt")                        # or load("x.weights", cfg=...)
"""
__version__ = "0.1.0"

_LAZY = {"build_model": "nn.model", "load_weights": "nn.model", "Darknet": "nn.model"}
# the sub-packages, along the flow; then the old flat names, kept for one release (each a
# darkcfg/<name>.py that makes the old name the same module as the new one)
_MODULES = {"config", "nn", "files", "objective", "dataset", "training", "evaluation", "infer",
            "cli", "errors", "outputs",
            "anchors", "augment", "cfg", "data", "detect", "evaluate", "export", "io",
            "keypoint", "layers", "model", "ptfile", "shapes", "speed", "train", "validate",
            "weights", "yolo"}


def load(path, cfg=None, *, dtype=None, calib=None, calib_count=None, **kwargs):
    """A ready model from a file: :func:`darkcfg.nn.model.load` (every float dtype, ``fuse``,
    ``channels_last``, rewrites - see there), or with ``dtype="int8"`` the network's trunk
    quantised after training, calibrated on ``calib`` (image paths, a list file, a folder or a
    .data; at most ``calib_count``, default 64), and from a ``.pt2`` (``darkcfg build --dtype
    int8 -o``, ``Int8Model.save``) that quantised model again: darkcfg.infer.int8.load, an
    Int8Model that detect and map run on the CPU; needs torchao (``pip install
    "darkcfg[int8]"``).  ``dtype="auto"`` never picks int8."""
    if str(dtype).lower() == "int8" or str(path).endswith(".pt2"):
        from .infer import int8
        return int8.load(path, cfg, calib=calib, calib_count=calib_count, **kwargs)
    from .errors import DarkcfgError
    from .nn import model
    if calib is not None or calib_count is not None:
        raise DarkcfgError("calib= is for dtype=\"int8\"")
    return model.load(path, cfg, dtype=dtype, **kwargs)


def __getattr__(name):
    import importlib
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _MODULES:
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'darkcfg' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _MODULES)
