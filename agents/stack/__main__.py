"""``python -m agents.stack up [--port N] [--data-dir DIR] [--no-demo] [--debug]`` and
``... test [ARGS]``.

``./estuary`` calls these after making sure the virtual environment is current.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agents.stack.testrun import run_tests
from agents.stack.up import StackOptions, run_stack

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    default_data = Path(os.environ.get("ESTUARY_DATA_DIR") or ROOT / "var")
    if argv[:1] == ["test"]:  # everything after "test" belongs to pytest
        return run_tests(argv[1:], ROOT, default_data.resolve())
    parser = argparse.ArgumentParser(prog="python -m agents.stack")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the control plane, three agents and a demo experiment")
    up.add_argument("--port", type=int, default=os.environ.get("PORT") or "8000",
                    help="HTTP port of the ASGI server (default $PORT or 8000)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--data-dir", type=Path, default=default_data)
    up.add_argument("--no-demo", dest="demo", action="store_false",
                    help="start everything but launch no demo experiment")
    up.add_argument("--debug", action="store_true",
                    help="run Django with DEBUG on: tracebacks and URL lists are shown to anyone "
                         "who can reach the server, so only on a machine of your own")
    up.add_argument("--web-processes", type=int, default=None,
                    help="ASGI server processes on the port (default $ESTUARY_WEB_PROCESSES, "
                         "else 2 on a machine with 2 cores or more)")
    commands.add_parser("test", help="run the test suite (arguments go to pytest)")
    args = parser.parse_args(argv)
    return run_stack(StackOptions(root=ROOT, data_dir=args.data_dir.resolve(), port=args.port,
                                  host=args.host, demo=args.demo, debug=args.debug,
                                  web_processes=args.web_processes))


if __name__ == "__main__":
    sys.exit(main())
