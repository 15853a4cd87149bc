"""torchvision.ops: FrozenBatchNorm2d lives in misc; other names (ptflops maps DeformConv2d as a
module type once torchvision is importable) are placeholders that refuse to be instantiated."""

from torchvision._placeholder import placeholder


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return placeholder("torchvision.ops", name)
