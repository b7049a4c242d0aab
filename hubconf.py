"""torch.hub entry points: ``torch.hub.load("OWNER/cnnzoo", "resnet50", pretrained=True)``.

One entry point per registered model (``cnnzoo.list_models()``), as torchvision's hubconf.py has
one per model: ``pretrained=True`` loads the model's default published weights
(``cnnzoo.list_pretrained()``), a tag such as ``"tv2_in1k"`` others, and the other keyword
arguments go to ``cnnzoo.create_model`` (``num_classes``, ``in_chans``, the model's own).
torch.hub lists every public callable here as an entry point: helpers start with ``_``.
"""
import inspect as _inspect

import cnnzoo as _cnnzoo
from cnnzoo.models.hub import find_weights as _find_weights
from cnnzoo.models.registry import model_entrypoint as _model_entrypoint

dependencies = ["torch", "numpy", "safetensors", "tqdm", "huggingface_hub"]


def _docstring(name):
    """The entry point's help (``torch.hub.help``): the model's registered configuration, its
    constructor's own docstring, and the weights ``pretrained`` can load."""
    cfg = _cnnzoo.get_pretrained_cfg(name)
    lines = [f"{name}: {cfg.family}, {cfg.paper}."]
    own = _inspect.getdoc(_model_entrypoint(name))
    lines += [own] if own else []
    lines.append(f"Input {'x'.join(map(str, cfg.input_size))}, {cfg.num_classes} classes; "
                 f"verified against {cfg.reference or 'its paper'}.")
    weights = _cnnzoo.list_pretrained(name)
    if weights:
        default = _find_weights(name).name
        lines.append(f"pretrained=True loads the published weights {default}; pretrained=TAG one of "
                     f"{', '.join(weights)}.")
    else:
        lines.append("No published weights: pretrained=True raises a ValueError.")
    lines.append("Other keyword arguments go to cnnzoo.create_model (num_classes, in_chans, the model's own).")
    return "\n\n".join(lines)


def _entrypoint(name):
    def entry(pretrained=False, **kwargs):
        return _cnnzoo.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = _docstring(name)
    return entry


for _name in _cnnzoo.list_models():
    globals()[_name] = _entrypoint(_name)
del _name
