"""cnnzoo: the classic convolutional image classifiers, faithful to their papers."""
# The model modules register themselves on import; the registry imports none of them.
from cnnzoo import models  # noqa: F401
from cnnzoo.compress import load_compressed
from cnnzoo.export import optimize_for_inference
from cnnzoo.hub import list_pretrained
from cnnzoo.registry import create_model, get_model_cfg, get_pretrained_cfg, list_models
from cnnzoo.weights import load_pretrained

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "get_model_cfg", "get_pretrained_cfg", "list_pretrained", "load_pretrained",
           "optimize_for_inference", "load_compressed", "__version__"]
