"""Minimal stand-in for torchvision so that `import timm` and `timm.create_model(...)` work.

Only what timm 1.0.31's import chain touches is provided (see ../../README.md, "torchvision
stand-in"). Data transforms and datasets are placeholders that raise if instantiated.
"""

__version__ = "0.0.0+stub"
