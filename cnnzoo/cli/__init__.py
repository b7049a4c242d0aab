"""The ``cnnzoo`` command: argparse sub-commands, each a thin call into the library.

One module per command (``models`` also holds ``weights``); ``common`` holds the flags they share. Every command prints a
human-readable result; with ``--json`` its last line is one JSON object. Errors a user can fix (bad
names, missing files, mismatched checkpoints) end with a one-line message and exit status 2, not a
traceback.
"""
from __future__ import annotations

import argparse

from cnnzoo.cli import (
    bench,
    compare,
    compress,
    degradation,
    experiment,
    explore,
    export,
    factorize,
    league,
    models,
    predict,
    push,
    quantize,
    shards,
    summary,
    train,
    visualize,
)
from cnnzoo.cli import (
    eval as evaluate,
)
from cnnzoo.cli.common import keep_freed_memory, run_command

DESCRIPTION = """\
cnnzoo: the classic convolutional image classifiers (LeNet-5, AlexNet, ZFNet, VGG, GoogLeNet and
Inception, ResNet and ResNeXt, MobileNet), written from their papers and checked against
torchvision/timm. Build, train, evaluate, analyse, benchmark, export and compress them, and see
inside them."""

EPILOG = """\
examples:
  cnnzoo models 'resnet*'                                  list models with params and GMACs
  cnnzoo train                                             LeNet-5 on Fashion-MNIST (about a minute on a CPU)
  cnnzoo train --recipe fast --epochs 6                    a named recipe, one setting changed
  cnnzoo train --model mobilenet_v1_cifar --model-kwargs width_mult=0.5
  cnnzoo eval --checkpoint runs/RUN_DIR
  cnnzoo predict --checkpoint runs/RUN_DIR shirt.png shoe.png
  cnnzoo push --checkpoint runs/RUN_DIR --repo-id OWNER/NAME   share a run on the Hugging Face Hub
  cnnzoo eval --checkpoint hf-hub:OWNER/NAME               a model from the Hub (timm's layout)
  cnnzoo summary googlenet --model-kwargs aux_logits=True  layer table: shapes, params, MACs, receptive fields
  cnnzoo bench resnet50 --reference                        speed against torchvision
  cnnzoo export --checkpoint runs/RUN_DIR --out model.onnx
  cnnzoo visualize cam --checkpoint runs/RUN_DIR --out maps   Grad-CAM of a few test images (also filters,
                                                           features, occlusion, deconv)
  cnnzoo explore --checkpoint runs/RUN_DIR --runs runs       the explorer in the browser: http://127.0.0.1:8765/
  cnnzoo experiment --list                                 design arguments (3x3 stacks, SE, ...) as experiments

`cnnzoo COMMAND --help` lists the flags of a command."""

# In the order `cnnzoo --help` lists them: the zoo, training and using a network, its deployment, studies, seeing inside.
COMMANDS = (models, summary, factorize, train, evaluate, predict, push, shards, bench, export, quantize, compress, league,
            compare, degradation, visualize, explore, experiment)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnzoo", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    return run_command(args)


__all__ = ["build_parser", "main"]
