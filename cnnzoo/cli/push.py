"""``cnnzoo push``: a finished run to the Hugging Face Hub, in timm's layout, with a model card."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import add_json


def cmd_push(args: argparse.Namespace) -> Any:
    from cnnzoo.training.publish import push_run

    res = push_run(args.checkpoint, args.repo_id, best=args.best, license=args.license, private=args.private,
                   revision=args.revision, commit_message=args.commit_message, token=args.token)
    top1 = res["test_top1"]
    print(f"pushed {res['model']} ({res['weights']}, test top-1 {top1:.4f}) to {res['url']}: {res['commit_url']}"
          if top1 is not None else f"pushed {res['model']} ({res['weights']}) to {res['url']}: {res['commit_url']}")
    print(f"load it with cnnzoo.create_model({res['name']!r}) or `cnnzoo eval --checkpoint {res['name']}`")
    return res


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("push", help="upload a run to the Hugging Face Hub (timm's layout, with a model card)",
                       description="Upload a finished run's weights (model.safetensors), config.json and a "
                                   "generated README.md model card to a Hugging Face Hub model repository, "
                                   "created if needed. The token is HF_TOKEN's or `hf auth login`'s; "
                                   "HF_ENDPOINT names another hub.")
    s.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="a run folder written by `cnnzoo train`")
    s.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="the model repository to push to")
    s.add_argument("--best", action="store_true", help="push best.safetensors (the best test top-1) instead of "
                                                       "last.safetensors (the final weights)")
    s.add_argument("--license", metavar="ID", help="the weights' licence, a Hub licence id (e.g. apache-2.0, mit, "
                                                    "cc-by-4.0); none stated otherwise")
    s.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps "
                                                          "its visibility)")
    s.add_argument("--revision", metavar="BRANCH", help="push to this branch, created from main if new "
                                                         "(default: main)")
    s.add_argument("--commit-message", metavar="TEXT", help="default: 'Add MODEL trained with cnnzoo'")
    s.add_argument("--token", help="a Hugging Face access token with write access (default: HF_TOKEN, or the "
                                   "one saved by `hf auth login`)")
    add_json(s)
    s.set_defaults(func=cmd_push)
