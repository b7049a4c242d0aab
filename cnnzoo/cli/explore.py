"""``cnnzoo explore``: the model explorer, a local web app (see :mod:`cnnzoo.explore`)."""
from __future__ import annotations

import argparse
from typing import Any


def cmd_explore(args: argparse.Namespace) -> Any:
    import uvicorn

    from cnnzoo.explore import create_app

    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    app = create_app(args.checkpoint or [], args.runs or [], max_upload=int(args.max_upload_mb * 2**20))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines can reach the explorer")
    print(f"cnnzoo explore: http://{args.host}:{args.port}/ ({len(app.state.checkpoints)} checkpoint(s); Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("explore", help="the model explorer in the browser: zoo, layers, predictions with Grad-CAM, charts",
                       description="A local web app: the zoo with search and sort, each model's layer table and "
                                   "stages, predictions of loaded checkpoints with Grad-CAM, occlusion and feature "
                                   "maps, and the accuracy and degradation charts of the runs on disk. Offline.")
    s.add_argument("--checkpoint", action="append", metavar="RUN_DIR|FILE",
                   help="a run folder or weights file to predict with (repeatable)")
    s.add_argument("--runs", action="append", metavar="DIR",
                   help="folder of runs, leagues or degradation results for the charts (repeatable)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest image upload accepted (default 10); a larger body is read up to 10 times this "
                        "and answered 413, beyond that the connection is closed")
    s.set_defaults(func=cmd_explore)
