"""darkcfg: darknet .cfg files as exact PyTorch models."""
__version__ = "0.1.0"
