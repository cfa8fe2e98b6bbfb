"""Flags, environment and docs table (docs/TESTING.md) for the settings of the runners under tools/
(``make load``, ``make soak``): each field is ``PREFIX + NAME`` in the environment
and ``--name`` on the command line, flags winning."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from genmedia_shared.paths import REPO_ROOT

USAGE_ERROR = 2  # as argparse exits on a bad flag
S = TypeVar("S", bound=BaseSettings)


def _prefix(settings_class: type[BaseSettings]) -> str:
    return str(settings_class.model_config.get("env_prefix", ""))


def parse_flags(
    settings_class: type[BaseSettings], prog: str, description: str, argv: Sequence[str] | None
) -> dict[str, Any]:
    """Flags named after the settings; only the ones given, so the rest come from the env."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS
    )
    for name, info in settings_class.model_fields.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=_prefix(settings_class) + name.upper(),
            help=info.description,
        )
    return vars(parser.parse_args(argv))


def settings_from(settings_class: type[S], overrides: dict[str, Any]) -> S:
    """Flags over environment over defaults; a bad value exits naming the variable."""
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        problems = [
            f"{_prefix(settings_class)}{'_'.join(str(p) for p in error['loc']).upper()}: "
            f"{error['msg']}"
            for error in exc.errors()
        ]
        print("invalid settings:\n  " + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


def markdown(settings_class: type[BaseSettings]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in settings_class.model_fields.items():
        default = info.default
        if default is None or default == "":
            shown = "unset"
        else:
            shown = "`" + str(default).replace(str(REPO_ROOT) + "/", "") + "`"
        lines.append(
            f"| `{_prefix(settings_class)}{name.upper()}` | {shown} | {info.description} |"
        )
    return "\n".join(lines)
