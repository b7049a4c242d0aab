"""One module per model family; importing them fills the registry (``cnnzoo/__init__.py`` does)."""
from cnnzoo.models import alexnet, inception, lenet, mobilenet, resnet, vgg  # noqa: F401
from cnnzoo.models.base import ZooModel

__all__ = ["ZooModel"]
