"""Files in and out: darknet .weights (read = write), the .pt writer, atomic output, ONNX export.

- weights: read_file, save_darknet, save_pt, read_pt, read_checkpoint, save_safetensors, walk
- ptfile: save - the .pt writer
- io: atomic_output, atomic_write, check_outputs, same_file
- export: export_onnx, check_exportable, supported_opsets

The submodules are imported on use (``from darkcfg.files import weights``); this
file imports none of them.
"""
