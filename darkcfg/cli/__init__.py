"""The ``darkcfg`` command line (``darkcfg.cli:main``, the [project.scripts] entry): one thin
module per command group - parse, call one library function, print.

- app: main - the click group, its error handling and exit codes
- files: summary, convert, init, build (cfg and weights files)
- infer: detect, export
- data: anchors, data check, data demo
- run: map, train
- darknet: darknet's spellings (detector train|test|map|calc_anchors, -map, -thresh ...)
- common: what they share (bundled cfgs, options, opening a cfg or a model)
"""
from .app import main

__all__ = ["main"]
