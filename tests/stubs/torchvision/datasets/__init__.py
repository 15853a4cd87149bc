from torchvision._placeholder import placeholder


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return placeholder("torchvision.datasets", name)
