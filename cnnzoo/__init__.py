"""cnnzoo: the classic convolutional image classifiers, faithful to their papers."""
from cnnzoo.inference.cnnz import load_compressed
from cnnzoo.inference.export import optimize_for_inference
from cnnzoo.models import create_model, get_model_cfg, get_pretrained_cfg, list_models, list_pretrained, load_pretrained

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "get_model_cfg", "get_pretrained_cfg", "list_pretrained", "load_pretrained",
           "optimize_for_inference", "load_compressed", "__version__"]
