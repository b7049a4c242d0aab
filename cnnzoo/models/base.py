"""The method set every cnnzoo model shares (timm's conventions).

A family subclasses ``ZooModel``, builds its layers in ``__init__`` and implements
``forward_features`` (image -> feature map). It names its first convolution and final linear layer in
``first_conv`` and ``classifier_name`` (dotted module paths), which is all ``cnnzoo.models.weights`` needs
to adapt weight files to other input channels or class counts, and declares:

- ``num_features`` (channels of ``forward_features``' output) and ``head_hidden_size`` (width of
  ``forward_head(x, pre_logits=True)``);
- ``global_pools``: the head's pooling choices. The default ``forward_head`` is the pooled linear
  head (``global_pool`` -> ``head_drop`` -> classifier); families with fully connected layers
  of a fixed input size override it and allow only their own pooling;
- ``feature_info``: one dict per stage (``num_chs``, ``reduction``, ``module``: the module whose
  output is the stage's feature map, called once per forward), which ``forward_intermediates``,
  ``prune_intermediate_layers`` and ``features_only`` models read;
- ``stem_modules`` and ``stage_modules``: module paths for ``group_matcher`` (layer-wise learning
  rates) and the units that ``set_grad_checkpointing`` recomputes (``_run_stage``).

``create_model`` gives each model its configuration as the dict ``pretrained_cfg`` (timm reads it
with ``.get``; ``default_cfg`` is the same dict, as in timm). A configuration is never edited in
place: ``set_pretrained_cfg`` gives the model a new dict, so whoever holds the old one (a copy of
the model, a caller) keeps what it was given.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cnnzoo.models.features import take_indices
from cnnzoo.models.layers import POOL_TYPES, GlobalPool2d, is_tracing


class _StopForward(Exception):
    """Raised by a feature hook once the last requested stage has run (``stop_early``)."""


class ZooModel(nn.Module):
    first_conv: str = "conv1"
    classifier_name: str = "fc"
    # {layout: [(regex, replacement), ...]} renaming a reference's state_dict keys to ours.
    KEY_MAPS: dict[str, list[tuple[str, str]]] = {}
    # Names of optional auxiliary classifier modules (trained with, dropped at inference).
    aux_heads: tuple[str, ...] = ()
    pretrained_cfg: dict[str, Any]
    global_pools: tuple[str, ...] = POOL_TYPES
    stem_modules: tuple[str, ...] = ()
    stage_modules: tuple[str, ...] = ()
    grad_checkpointing: bool = False

    num_classes: int
    num_features: int  # channels of forward_features' output
    head_hidden_size: int  # width of the pre-logits features
    feature_info: list[dict[str, Any]]

    # ---------------------------------------------------------------------------------------------
    # Forward and head

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    @default_cfg.deleter
    def default_cfg(self) -> None:
        del self.pretrained_cfg

    def set_pretrained_cfg(self, **changes: Any) -> None:
        """Replace the model's configuration by a new dict: the current one with ``changes``."""
        cfg = getattr(self, "pretrained_cfg", None)
        if cfg is None:
            raise AttributeError(f"{type(self).__name__} has no pretrained_cfg to change (create_model gives one)")
        unknown = sorted(set(changes) - set(cfg))
        if unknown:
            raise ValueError(f"{cfg['architecture']}: no configuration field {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(cfg))})")
        self.pretrained_cfg = {**cfg, **changes}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits, or the features the classifier reads with ``pre_logits``."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def _init_head(self, num_classes: int, global_pool: str, drop_rate: float, bias: bool = True) -> None:
        """The pooled linear head: ``global_pool`` -> dropout -> ``classifier_name`` (identity for 0 classes)."""
        self.global_pool = self._make_pool(global_pool, num_classes)
        # No dropout call at all at rate 0 (not even an eval-mode one).
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features
        self._set_classifier(classifier(self.num_features, num_classes, bias))

    def _make_pool(self, global_pool: str, num_classes: int) -> nn.Module:
        self._check_global_pool(global_pool, num_classes)
        return GlobalPool2d(global_pool)

    def _check_global_pool(self, global_pool: str, num_classes: int) -> None:
        if global_pool not in self.global_pools:
            fixed = "" if self.global_pools == POOL_TYPES else " (its head's fully connected layers fix the pooling)"
            raise ValueError(f"{self._arch()} supports global_pool in {self.global_pools}{fixed}, got {global_pool!r}")
        if global_pool == "" and num_classes > 0 and self.global_pools == POOL_TYPES:
            raise ValueError(f"{self._arch()}: global_pool='' keeps the feature map, which needs num_classes=0 "
                             f"(a linear classifier takes pooled features), got num_classes={num_classes}")

    def _set_classifier(self, module: nn.Module) -> None:
        parent_name, _, leaf = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, leaf, module)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the final linear layer by a fresh one with ``num_classes`` outputs (0: identity,
        forward then returns the pre-logits features) and optionally the head's pooling."""
        if global_pool is not None:
            self._check_global_pool(global_pool, num_classes)
            if isinstance(getattr(self, "global_pool", None), GlobalPool2d):
                self.global_pool = GlobalPool2d(global_pool)
        elif isinstance(getattr(self, "global_pool", None), GlobalPool2d):
            self._check_global_pool(self.global_pool.pool_type, num_classes)
        old, weight = self.get_classifier(), next(self.parameters())
        bias = not isinstance(old, nn.Linear) or old.bias is not None  # airbench's has none
        self._set_classifier(classifier(self.head_hidden_size, num_classes, bias).to(weight.device, weight.dtype))
        self.num_classes = num_classes
        if hasattr(self, "pretrained_cfg"):
            self.set_pretrained_cfg(num_classes=num_classes)

    def _arch(self) -> str:
        return self.pretrained_cfg["architecture"] if hasattr(self, "pretrained_cfg") else type(self).__name__

    def check_input(self, x: torch.Tensor) -> None:
        """Reject inputs the network cannot take with a message that says what it can take."""
        # A graph capture keeps no Python branches; its own shape checks (or the layers') apply.
        if is_tracing() or not hasattr(self, "pretrained_cfg"):
            return
        cfg = self.pretrained_cfg
        if x.dim() != 4:
            raise ValueError(f"{cfg['architecture']} expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
        c, h, w = cfg["min_input_size"]
        if x.shape[1] != c:
            raise ValueError(
                f"{cfg['architecture']} was built for {c} input channels, got {x.shape[1]} "
                f"(create it with in_chans={x.shape[1]})"
            )
        if cfg["fixed_input_size"]:
            if tuple(x.shape[2:]) != (h, w):
                raise ValueError(f"{cfg['architecture']} takes exactly {h}x{w} inputs, got {x.shape[2]}x{x.shape[3]}")
        elif x.shape[2] < h or x.shape[3] < w:
            small = cfg.get("small_variant")
            hint = f"; for small images use '{small}'" if small and small != cfg["architecture"] else ""
            raise ValueError(
                f"{cfg['architecture']} needs inputs of at least {h}x{w}, got {x.shape[2]}x{x.shape[3]}{hint}"
            )

    # ---------------------------------------------------------------------------------------------
    # Intermediate features

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of the stages in ``feature_info`` chosen by ``indices`` (an int n: the
        last n; a list: those stages, negatives counting from the end; None: all), with the output
        of ``forward_features`` unless ``intermediates_only``. ``stop_early`` stops after the last
        chosen stage, whose map is then the returned final features. These networks have no final
        norm layer, so ``norm`` changes nothing; only ``output_fmt="NCHW"`` exists."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        self.check_input(x)
        chosen, last = take_indices(len(self.feature_info), indices, self._arch())
        wanted = {self.feature_info[i]["module"]: i for i in chosen}
        taken: dict[int, torch.Tensor] = {}

        def hook(name: str) -> Callable[..., None]:
            def keep(module: nn.Module, args: Any, output: torch.Tensor) -> None:
                taken[wanted[name]] = output
                if stop_early and wanted[name] == last:
                    raise _StopForward
            return keep

        handles = [self.get_submodule(name).register_forward_hook(hook(name)) for name in wanted]
        final: torch.Tensor | None = None
        try:
            final = self.forward_features(x)
        except _StopForward:
            final = taken[last]
        finally:
            for handle in handles:
                handle.remove()
        missing = [i for i in chosen if i not in taken]
        if missing:
            raise RuntimeError(f"{self._arch()}: stage modules {[self.feature_info[i]['module'] for i in missing]} "
                               "did not run in forward_features")
        intermediates = [taken[i] for i in chosen]
        return intermediates if intermediates_only else (final, intermediates)

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] | None = None,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Replace every module that ``forward_features`` runs after the last stage in ``indices``
        by the identity, so the model computes no more than the chosen stages need; with
        ``prune_head`` also every module it never runs (the head: pooling, dropout, fully connected
        layers, auxiliary classifiers), leaving ``num_classes`` 0. Returns the stage indices.
        ``prune_norm`` is accepted for timm's signature: these networks have no final norm."""
        chosen, last = take_indices(len(self.feature_info), indices, self._arch())
        after, unused = self._modules_after(self.feature_info[last]["module"])
        for name in after + (unused if prune_head else []):
            parent_name, _, leaf = name.rpartition(".")
            setattr(self.get_submodule(parent_name) if parent_name else self, leaf, nn.Identity())
        self.num_features = self.feature_info[last]["num_chs"]
        if prune_head:
            self.num_classes = 0
            self.head_hidden_size = self.num_features
        return chosen

    def _modules_after(self, stage: str) -> tuple[list[str], list[str]]:
        """The outermost modules whose first call in ``forward_features`` comes after ``stage``'s
        call has returned, and those it never calls, found by running the network once on its
        smallest input."""
        order: list[tuple[str, str]] = []
        handles = []
        for name, module in self.named_modules():
            if name:
                handles.append(module.register_forward_pre_hook(lambda m, a, n=name: order.append(("start", n))))
                handles.append(module.register_forward_hook(lambda m, a, o, n=name: order.append(("end", n))))
        param = next(self.parameters())
        size = self.pretrained_cfg["min_input_size"] if hasattr(self, "pretrained_cfg") else (param.shape[1], 224, 224)
        was_training = self.training
        try:
            with torch.no_grad():
                self.eval().forward_features(param.new_zeros(1, *size))
        finally:
            self.train(was_training)
            for handle in handles:
                handle.remove()

        def outermost(names: list[str]) -> list[str]:
            kept: list[str] = []
            for name in names:
                if not any(name.startswith(k + ".") for k in kept):
                    kept.append(name)
            return kept

        stage_end = order.index(("end", stage))
        started_before = {n for kind, n in order[:stage_end + 1] if kind == "start"}
        started_after = [n for kind, n in order[stage_end + 1:] if kind == "start" and n not in started_before]
        # A container can be iterated rather than called: it is used when a module inside it is.
        called = {n for _, n in order}
        used = called | {p for n in called for p in _parents(n)}
        never = [n for n, _ in self.named_modules() if n and n not in used]
        return outermost(list(dict.fromkeys(started_after))), outermost(never)

    # ---------------------------------------------------------------------------------------------
    # Training helpers

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """In training, keep only the input of each stage and recompute the stage in the backward
        pass (``torch.utils.checkpoint``): the same gradients and batch-norm statistics for less
        activation memory and about one more forward pass of compute."""
        self.grad_checkpointing = enable

    def _run_stage(self, stage: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not is_tracing():
            norms = stage if isinstance(stage, nn.Module) else self
            return checkpoint(stage, x, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), _keep_norm_statistics(norms)))
        return stage(x)

    def _run_stages(self, x: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
        for name in names:
            x = self._run_stage(self.get_submodule(name), x)
        return x

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter grouping: ``{"stem": regex, "blocks": [(regex, (ordinal,)), ...]}`` with
        one block per stage (``coarse``) or per block of a stage, in forward order; parameters
        matched by neither (the head) form the last group."""
        units: list[str] = []
        for name in self.stage_modules:
            module = self.get_submodule(name)
            if not coarse and isinstance(module, nn.Sequential):
                units += [f"{name}.{child}" for child, m in module.named_children() if any(True for _ in m.parameters())]
            else:
                units.append(name)
        stem = "|".join(rf"^{re.escape(n)}\." for n in self.stem_modules)
        return {"stem": stem, "blocks": [(rf"^{re.escape(n)}\.", (i,)) for i, n in enumerate(units)]}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def classifier(in_features: int, num_classes: int, bias: bool = True) -> nn.Module:
    """The final linear layer, or the identity for ``num_classes == 0`` (pre-logits out)."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    return nn.Linear(in_features, num_classes, bias=bias) if num_classes > 0 else nn.Identity()


@contextlib.contextmanager
def _keep_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norm layers update their running statistics on every training forward; a
    checkpoint's recomputation must not count the same batch twice."""
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in m.buffers()]
    try:
        yield
    finally:
        for buffer, value in saved:
            buffer.copy_(value)
