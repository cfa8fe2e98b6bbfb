"""``python -m services NAME`` (``genmedia-serve NAME``): runs one process by name.

The container image's entry point: one image, the process chosen by its
argument, names and packages from the registry. ``genmedia-serve
healthcheck NAME`` asks that process (on this host) whether it is ready.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from services.common.registry import ALL_PROCESSES, ProcessSpec

PROCESSES = {process.name: process for process in ALL_PROCESSES}


def _port(process: ProcessSpec) -> int:
    # The same variable the process's own settings read.
    return int(os.environ.get("GENMEDIA_GRPC_PORT", process.grpc_port))


def parser() -> argparse.ArgumentParser:
    names = sorted(PROCESSES)
    parser = argparse.ArgumentParser(
        prog="genmedia-serve", description="Run one genmedia process, or check its health."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in names:
        commands.add_parser(name, help=f"serve {name} (python -m {PROCESSES[name].package})")
    check = commands.add_parser(
        "healthcheck", help="exit 0 when the named process on this host is SERVING"
    )
    check.add_argument("process", choices=names)
    check.add_argument(
        "--service",
        default="",
        help='health service name to ask about ("" = everything it serves, "liveness")',
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "healthcheck":
        from services.common.healthcheck import is_serving

        process = PROCESSES[args.process]
        port = _port(process)
        serving = is_serving(port, args.service)
        print(f"{process.name} on :{port}: {'SERVING' if serving else 'not serving'}")
        return 0 if serving else 1
    process = PROCESSES[args.command]
    sys.argv = [process.package]
    runpy.run_module(process.package, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
