"""One exception family for everything a user's file can trigger.

Messages are compiler style so an editor can jump to the spot::

    cfgs/bad.cfg:619: [route] (layer 83): option 'layers': index -99 points before layer 0
    yolov3.weights: layer 105 [convolutional]: needs 65,535 floats at offset 61,936,222, 1,000 left

`assert` is kept for internal invariants only.
"""
from __future__ import annotations


class DarkcfgError(Exception):
    """Base class: a problem with the user's input, never a bug in darkcfg."""


class CfgError(DarkcfgError):
    """A problem in a .cfg file, located by file, line, section, layer index and option."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 section: str | None = None, layer: int | None = None,
                 option: str | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.section = section
        self.layer = layer
        self.option = option
        super().__init__(self.format())

    def format(self) -> str:
        where = self.path or "<cfg>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where + ":"]
        if self.section:
            sec = f"[{self.section}]"
            if self.layer is not None:
                sec += f" (layer {self.layer})" if self.layer >= 0 else " (net)"
            parts.append(sec + ":")
        if self.option:
            parts.append(f"option '{self.option}':")
        parts.append(self.message)
        return " ".join(parts)


class WeightsError(DarkcfgError):
    """A problem in a weights file (.weights, .pt, .safetensors), located by layer and offset."""

    def __init__(self, message: str, path: str | None = None, layer: int | None = None,
                 layer_type: str | None = None, offset: int | None = None):
        self.message = message
        self.path = path
        self.layer = layer
        self.layer_type = layer_type
        self.offset = offset
        super().__init__(self.format())

    def format(self) -> str:
        parts = [(self.path or "<weights>") + ":"]
        if self.layer is not None:
            parts.append(f"layer {self.layer}" + (f" [{self.layer_type}]:" if self.layer_type else ":"))
        parts.append(self.message)
        return " ".join(parts)
