"""Placeholders for torchvision names that timm imports but never calls when building models."""

import os


def placeholder(module: str, name: str):
    if os.environ.get("TVSTUB_TRACE"):
        print(f"[tvstub] {module}.{name}")

    class _Unavailable:
        __qualname__ = name

        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{module}.{name} is not available in the torchvision stand-in")

    _Unavailable.__name__ = name
    return _Unavailable
