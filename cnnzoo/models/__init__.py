"""The networks, and what builds them by name.

    registry.py    names -> constructors and configurations (``register_model``, ``list_models``)
    factory.py     ``create_model``: a registered model, with published or local weights
    hub.py         the catalogue of published weight files, fetched into the references' caches
    hf_hub.py      Hugging Face Hub repositories in timm's layout (``hf-hub:OWNER/NAME``), both ways
    weights.py     reading weight files without unpickling code, and fitting them to a model
    checkpoint.py  safetensors files that rebuild their model, and ``load_checkpoint``
    base.py        the methods every cnnzoo model shares (timm's conventions)
    layers.py      building blocks shared by several families
    features.py    multi-scale feature maps (``features_only=True``)
    lenet.py alexnet.py vgg.py inception.py resnet.py mobilenet.py   one file per family

Model files import the registry; importing this package imports them, which fills it.
"""
from cnnzoo.models import alexnet, inception, lenet, mobilenet, resnet, vgg  # noqa: F401
from cnnzoo.models.base import ZooModel
from cnnzoo.models.factory import create_model
from cnnzoo.models.hub import list_pretrained
from cnnzoo.models.registry import get_model_cfg, get_pretrained_cfg, list_models
from cnnzoo.models.weights import load_pretrained

__all__ = ["ZooModel", "create_model", "list_models", "get_model_cfg", "get_pretrained_cfg", "list_pretrained",
           "load_pretrained"]
