"""Inference: detect on images, the speed paths (compile, bf16, CPU features), ONNX export.

- detect: detect_image, region_detections, unletterbox, draw
- speed: auto_dtype, compile_frozen, cpu_features, reuse_freed_memory
- export: export_onnx, check_exportable, supported_opsets

The submodules are imported on use (``from darkcfg.infer import detect``); this
file imports none of them.
"""
