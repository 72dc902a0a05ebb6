"""darkcfg: darknet .cfg files as exact PyTorch models.

``import darkcfg`` does not import torch; the torch parts load on first use::

    net = darkcfg.config.shapes.infer("cfgs/yolov3.cfg")  # torch-free summary data
    model = darkcfg.build_model("cfgs/yolov3.cfg")        # a torch.nn.Module
    model = darkcfg.load("out.pt")                        # or load("x.weights", cfg=...)
"""
__version__ = "0.1.0"

_LAZY = {"build_model": "nn.model", "load": "nn.model", "load_weights": "nn.model",
         "Darknet": "nn.model"}
# the sub-packages, along the flow; then the old flat names, kept for one release (each a
# darkcfg/<name>.py that makes the old name the same module as the new one)
_MODULES = {"config", "nn", "files", "objective", "dataset", "training", "evaluation", "infer",
            "cli", "errors", "outputs",
            "anchors", "augment", "cfg", "data", "detect", "evaluate", "export", "io",
            "keypoint", "layers", "model", "ptfile", "shapes", "speed", "train", "validate",
            "weights", "yolo"}


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
