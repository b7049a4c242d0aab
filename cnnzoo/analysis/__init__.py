"""Look inside a network: per-layer table, operation counts, receptive fields, output sizes and the
arithmetic of factorised convolutions.

- ``summary(model, input_size, depth)``: one row per module call with its kernel, stride, padding,
  groups, output shape, parameters, MACs, and the receptive field and effective stride ("jump") of
  its output; totals for parameters, MACs and activation memory. ``format_summary`` prints it as a
  table, ``summary_to_json`` turns it into plain JSON data.
- ``count_macs(model, input_size)``: multiply-accumulates for one image.
- ``conv_output_size(n, kernel, stride, padding, dilation, ceil_mode)``: PyTorch's output-size rule
  for convolutions and pooling.
- ``receptive_field(model, input_size)``: receptive field and jump after every leaf module,
  propagated through the real computation graph (branches, concatenations, shortcuts).
- ``factorize(kernel, channels_in, channels_out, size)``: one k x k convolution against a stack of
  3 x 3 convolutions (VGG) and against a 1 x k + k x 1 pair (Inception v3).

How the numbers are obtained. The model runs once, in eval mode, on one image (zeros; on a meta
model nothing is computed at all). ``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of
convolutions and matrix products; 1 MAC = 2 FLOPs, and MACs are reported, which is the convention of
the published figures (torchvision's ``_ops``, timm's ``gmacs``, the papers' "mult-adds"): batch
norm, activations, pooling, additions and biases are not counted. A second dispatch mode follows
every tensor computed from the input and carries its receptive field along, so that what is
reported is what the code really does, not what a layer list suggests.

Modules: ``geometry`` (output sizes), ``fields`` (the traced forward pass and receptive fields),
``layer_table`` (summary, count_macs), ``factorization`` (the factorisation study and its plot),
``tables`` (text formatting); this package re-exports their public names.
"""
from cnnzoo.analysis.factorization import (
                                           FactorizeResult,
                                           FactorOption,
                                           factorize,
                                           factorize_to_json,
                                           format_factorize,
                                           plot_factorize,
)
from cnnzoo.analysis.fields import LayerField, receptive_field
from cnnzoo.analysis.geometry import conv_output_size
from cnnzoo.analysis.layer_table import LayerInfo, ModelSummary, count_macs, format_summary, summary, summary_to_json

__all__ = [
    "LayerInfo",
    "ModelSummary",
    "LayerField",
    "FactorOption",
    "FactorizeResult",
    "summary",
    "format_summary",
    "summary_to_json",
    "count_macs",
    "conv_output_size",
    "receptive_field",
    "factorize",
    "format_factorize",
    "factorize_to_json",
    "plot_factorize",
]
