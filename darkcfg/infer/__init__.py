"""Inference: detect on images, the speed paths (compile, bf16, CPU features).

- detect: detect_image, region_detections, unletterbox, draw
- speed: auto_dtype, compile_frozen, cpu_features, reuse_freed_memory

The submodules are imported on use (``from darkcfg.infer import detect``); this
file imports none of them.
"""
