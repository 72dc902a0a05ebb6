"""The network: leaf layers, the builder registry and Darknet(nn.Module), SyncBN.

- layers: ConvBNAct, MaxPool, Route, Shortcut, Yolo, Region, KeypointHead, ... (one per section)
- model: build_model, load, load_weights, Darknet, register, for_inference, to_dtype
- syncbn: SyncBatchNorm, convert
- dtypes: auto_dtype, cpu_flags, cpu_features - the dtype a device computes fastest in

The submodules are imported on use (``from darkcfg.nn import layers``); this
file imports none of them.
"""
