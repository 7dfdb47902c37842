"""`sanawm serve`: the world model behind HTTP + WebSocket, with a page for live control.

Binds 127.0.0.1 unless told otherwise; open http://127.0.0.1:8000/ and press W. Serving on
another address without `--token` is allowed but warned about: anyone who can reach the
port can then use the model.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from sanawm.errors import UserInputError

EMBEDDED = "embedded"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the model over HTTP/WebSocket with a page for live keyboard control",
        description="Serve the model: a page at / for live control, /v1/realtime (WebSocket), /v1/videos (jobs).",
    )
    p.add_argument("--model", default=EMBEDDED,
                   help=f"model folder, or {EMBEDDED!r} (default) / 'embedded-fast' for a bundled model")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--token", help="require this bearer token on /v1 (letters, digits and ._~- only)")
    p.add_argument("--max-sessions", type=int, default=2, help="live sessions at once (default 2)")
    p.add_argument("--data", help="folder for offline jobs and results (default: ~/.cache/sanawm/serve)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def resolve_model(name: str) -> tuple[str, str]:
    """(what `WorldModel.load` takes: a bundled model's name or a folder; the name shown to clients)."""
    from sanawm.pipeline import BUNDLED_MODELS

    if name in BUNDLED_MODELS:
        return name, name
    folder = Path(name)
    if not folder.is_dir():
        raise UserInputError(f"--model: no such model folder: {name}")
    return str(folder), folder.resolve().name


def _check_args(args: argparse.Namespace) -> Path:
    from sanawm.serve.guard import TOKEN_CHARS

    if not 0 <= args.port < 65536:
        raise UserInputError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if args.max_sessions < 1:
        raise UserInputError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    if args.token is not None and not re.fullmatch(f"[{re.escape(TOKEN_CHARS)}]{{8,256}}", args.token):
        raise UserInputError("--token must be 8 to 256 characters of letters, digits and ._~-")
    data = Path(args.data) if args.data else Path(os.path.expanduser("~/.cache/sanawm/serve"))
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"--data: cannot create {data}: {err}") from None
    return data


def run(args: argparse.Namespace) -> int:
    try:
        from sanawm.serve.app import create_app
        from sanawm.serve.server import listening_socket, load_off_main_thread, uvicorn_server
    except ImportError as err:
        raise UserInputError(f"serving needs the 'serve' extra: pip install 'sanawm[serve]' ({err.name} is missing)") from None
    from sanawm.pipeline import WorldModel
    from sanawm.serve.config import LOOPBACK_HOSTS, ServeConfig

    data = _check_args(args)
    folder, name = resolve_model(args.model)
    config = ServeConfig(data_dir=data, token=args.token, max_sessions=args.max_sessions)
    loopback = args.host in LOOPBACK_HOSTS
    if not loopback and args.token is None:
        print(f"sanawm serve: warning: serving on {args.host} without --token: anyone who can reach it can use it",
              file=sys.stderr)  # fmt: skip
    try:  # before the model loads, so a taken port fails fast
        sock = listening_socket(args.host, args.port)
    except OSError as err:
        raise UserInputError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    with sock:
        model = load_off_main_thread(lambda: WorldModel.load(folder, device=args.device))
        app = create_app(model, name, config, loopback_only=loopback)
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"sanawm serve: model {name} ({model.image_size[1]}x{model.image_size[0]}); open http://{shown}:{port}/",
              file=sys.stderr, flush=True)  # fmt: skip
        uvicorn_server(app, config).run(sockets=[sock])
    return 0
