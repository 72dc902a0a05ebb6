"""The cfg and its torch-free shape inference (nothing here imports torch: `darkcfg summary`
starts fast).

- cfg: parse, load, save, rewrite, excerpt, unused_options - text <-> sections with line numbers
- shapes: network, infer, last_head, format_table, darknet_bflops - shapes and BFLOPs per layer

The submodules are imported on use (``from darkcfg.config import cfg``); this
file imports none of them.
"""
