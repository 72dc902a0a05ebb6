"""Files in: darknet .weights (read = write) and the .pt writer, between the cfg's shapes and the
modules they fill (atomic writing is darkcfg.outputs, below every stage; ONNX export, which runs
a built model, is darkcfg.infer.export - both importable here under their earlier names).

- weights: read_file, save_darknet, save_pt, read_pt, read_checkpoint, save_safetensors, walk
- ptfile: save - the .pt writer

The submodules are imported on use (``from darkcfg.files import weights``); this
file imports none of them.
"""
