"""``trickscope demo``: train a small CNN on digits and watch it live."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Any

from trickscope_cli.errors import CliError


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="train a small CNN on scikit-learn's digits and stream it",
        description="Train a small residual CNN on scikit-learn's digits (no download) for about "
        "a minute on the CPU with the nine tricks (decoupled weight decay, warmup + cosine decay, "
        "DropPath, EMA, SGD momentum / AdamW, gradient accumulation, clipping, per-layer "
        "statistics), streaming everything to a trickscope server.",
    )
    parser.add_argument(
        "--url",
        help="server to stream to (default: TRICKSCOPE_URL, else a server started in-process)",
    )
    parser.add_argument(
        "--epochs", type=int, default=15, help="training epochs per run (default 15)"
    )
    parser.add_argument(
        "--optimizer",
        choices=["both", "adamw", "sgd"],
        default="both",
        help="AdamW, SGD with Nesterov momentum, or one run of each to compare (default both)",
    )
    parser.add_argument("--name", help="run name (default: generated)")
    parser.add_argument(
        "--db",
        dest="database_url",
        metavar="URL",
        help="store of the in-process server (default: the user data directory's SQLite file)",
    )
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop the in-process server when training ends instead of serving until Ctrl-C",
    )
    parser.set_defaults(handler=run)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _start_in_process_server(args: argparse.Namespace) -> tuple[str, Any]:
    """A uvicorn server on a background thread: on 127.0.0.1:8000, or a free port if taken."""
    import uvicorn

    from trickscope_cli.serve_cmd import settings_from_args
    from trickscope_server.app import create_app

    args.host, args.port = None, None
    settings = settings_from_args(args)
    port = settings.port if _port_free(settings.host, settings.port) else 0
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="trickscope-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise CliError("the in-process server did not start")
        time.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://{settings.host}:{bound_port}", server


def run(args: argparse.Namespace) -> int:
    import os

    if args.epochs < 1:
        raise CliError(f"--epochs must be at least 1, got {args.epochs}")
    try:
        from trickscope.demo import DemoConfig, run_demo
    except ImportError as exc:
        raise CliError(
            f"the demo needs torch and scikit-learn ({exc}): pip install 'trickscope[demo]' torch"
        ) from None

    url = args.url or os.environ.get("TRICKSCOPE_URL")
    server = None
    if url is None:
        url, server = _start_in_process_server(args)
        print(f"trickscope: started a server at {url}/", flush=True)
    url = url.rstrip("/")
    optimizers = ["adamw", "sgd"] if args.optimizer == "both" else [args.optimizer]
    for optimizer in optimizers:
        name = args.name or f"digits-{optimizer}-{time.strftime('%H%M%S')}"
        if len(optimizers) > 1 and args.name:
            name = f"{args.name}-{optimizer}"
        print(f"trickscope: training {name} on digits, streaming to {url}", flush=True)
        config = DemoConfig(optimizer=optimizer, epochs=args.epochs)
        try:
            run_url, result = run_demo(url, config, name=name)
        except ImportError as exc:
            raise CliError(str(exc)) from None
        print(f"trickscope: run {run_url}", flush=True)
        print(
            f"trickscope: {result['steps']} steps in {result['seconds']:.1f} s, "
            f"test accuracy raw {result['acc_raw']:.3f}, EMA {result['acc_ema']:.3f}",
            flush=True,
        )
    if server is not None:
        if not args.exit_when_done:
            print("trickscope: serving the dashboard; press Ctrl-C to stop", flush=True)
            try:
                while server.started and not server.should_exit:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        server.should_exit = True
    return 0
