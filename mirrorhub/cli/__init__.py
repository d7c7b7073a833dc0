"""The ``mirrorhub`` command.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its sub-commands; a sub-command's handler takes ``(args, settings)`` and returns an exit code.
Errors we raise on purpose become one clear line on stderr and exit code 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

from mirrorhub import __version__
from mirrorhub.errors import MirrorhubError
from mirrorhub.settings import load_settings

# Modules that add sub-commands, in the order --help lists them.
COMMAND_MODULES = (
    "serve",
    "worker",
    "db",
    "mirror",
    "user",
    "origin",
    "scan",
    "probe",
    "geoip",
    "demo",
    "token",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirrorhub", description="HTTP redirect dispatcher for download mirrors."
    )
    parser.add_argument("--version", action="version", version=f"mirrorhub {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default: $MIRRORHUB_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        import_module(f"mirrorhub.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(config_file=args.config)
        code: int = args.handler(args, settings)
        return code
    except MirrorhubError as exc:
        print(f"mirrorhub: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
