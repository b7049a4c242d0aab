"""timm's model API on every registered model at its real input size (tests/models/test_timm_api.py checks
shapes on the meta device and values on small models; this sweep computes values for all 62).

    .venv/bin/python benchmarks/timm_api_sweep.py [--pattern 'resnet*'] [--minimum] [--no-export]

Per model, in eval mode on a batch of 2 random images at the default input size (``--minimum``: the
smallest accepted size), every check must agree bit for bit with eager ``model(x)``:

- ``torch.fx.symbolic_trace(model)``;
- torchvision's ``create_feature_extractor`` at the ``feature_info`` modules, against
  ``forward_intermediates``;
- ``torch.export.export`` (skipped with ``--no-export``: it takes seconds per model);
- ``create_model(features_only=True)`` with the same weights, against ``forward_intermediates``;
- ``num_classes=0``: the pre-logits features of ``forward_head(pre_logits=True)``.

Prints one line per model and a summary; exits 1 if any model fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torchvision.models.feature_extraction import create_feature_extractor

import cnnzoo


def same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape or not torch.equal(a, b):
        diff = (a - b).abs().max().item() if a.shape == b.shape else float("nan")
        raise AssertionError(f"{what}: differs from eager (shapes {tuple(a.shape)} / {tuple(b.shape)}, max diff {diff:.3g})")


@torch.no_grad()
def check(name: str, minimum: bool, export: bool) -> list[str]:
    torch.manual_seed(0)
    model = cnnzoo.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(2, *cfg["min_input_size" if minimum else "input_size"])
    want = model(x)
    done = []
    same(torch.fx.symbolic_trace(model)(x), want, "fx.symbolic_trace")
    done.append("fx")
    if model.feature_info:
        maps = model.forward_intermediates(x, intermediates_only=True)
        nodes = [d["module"] for d in model.feature_info]
        for got, ref, node in zip(create_feature_extractor(model, return_nodes=nodes)(x).values(), maps, nodes):
            same(got, ref, f"create_feature_extractor at {node}")
        done.append("feature_extractor")
        features = cnnzoo.create_model(name, features_only=True)
        features.model.load_state_dict(model.state_dict(), strict=False)
        for got, ref, node in zip(features.eval()(x), maps, nodes):
            same(got, ref, f"features_only at {node}")
        done.append("features_only")
    if export:
        same(torch.export.export(model, (x,)).module()(x), want, "torch.export")
        done.append("export")
    headless = cnnzoo.create_model(name, num_classes=0).eval()
    headless.load_state_dict({k: v for k, v in model.state_dict().items()
                              if not k.startswith(model.classifier_name + ".")})
    same(headless(x), model.forward_head(model.forward_features(x), pre_logits=True), "num_classes=0")
    done.append("num_classes=0")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="*")
    parser.add_argument("--minimum", action="store_true", help="the smallest accepted input instead of the default")
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args()
    failed = []
    start = time.perf_counter()
    for name in cnnzoo.list_models(args.pattern):
        t = time.perf_counter()
        try:
            done = check(name, args.minimum, not args.no_export)
            print(f"{name:22s} ok   {time.perf_counter() - t:5.1f} s  {', '.join(done)}", flush=True)
        except Exception as exc:  # report every model, then fail
            failed.append(name)
            print(f"{name:22s} FAIL {type(exc).__name__}: {exc}", flush=True)
    print(f"{len(cnnzoo.list_models(args.pattern)) - len(failed)} ok, {len(failed)} failed "
          f"({time.perf_counter() - start:.0f} s){': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
