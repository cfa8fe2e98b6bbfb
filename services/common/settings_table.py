"""Prints the settings table of docs/SETTINGS.md from the settings classes themselves.

``python -m services.common.settings_table`` prints it; ``--write [FILE]`` replaces it in FILE
(default docs/SETTINGS.md). A unit test checks that docs/SETTINGS.md lists every variable, so
the table cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic_settings import BaseSettings

from genmedia_shared.paths import REPO_ROOT
from services.common.registry import ALL_PROCESSES
from services.common.settings import ENV_PREFIX
from services.launcher.settings import LauncherSettings

SETTINGS_DOC = REPO_ROOT / "docs" / "SETTINGS.md"
"""The page that holds the table."""

SETTINGS_BY_PROCESS: dict[str, type[BaseSettings]] = {
    **{process.name: process.settings_class() for process in ALL_PROCESSES},
    "launcher": LauncherSettings,  # runs the others; serves nothing itself
}


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    text = str(getattr(value, "value", value))
    return text.replace(str(REPO_ROOT) + "/", "")


@dataclass
class Row:
    processes: list[str] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)
    description: str = ""


def rows() -> dict[str, Row]:
    """One row per environment variable, across every process."""
    table: dict[str, Row] = {}
    for process, settings_class in SETTINGS_BY_PROCESS.items():
        for name, info in settings_class.model_fields.items():
            row = table.setdefault(ENV_PREFIX + name.upper(), Row())
            row.processes.append(process)
            row.defaults.append("required" if info.is_required() else _default(info.default))
            row.description = row.description or info.description or ""
    return table


def markdown() -> str:
    lines = ["| variable | processes | default | meaning |", "|---|---|---|---|"]
    for variable, row in sorted(rows().items()):
        used_by = "every service" if len(row.processes) >= 4 else ", ".join(row.processes)
        if len(set(row.defaults)) == 1:
            default = f"`{row.defaults[0]}`"
        else:
            default = ", ".join(
                f"{p} `{d}`" for p, d in zip(row.processes, row.defaults, strict=True)
            )
        lines.append(f"| `{variable}` | {used_by} | {default} | {row.description} |")
    return "\n".join(lines)


def write_into(document: Path = SETTINGS_DOC) -> None:
    """Replaces the table in ``document`` (from its header line to the blank line after)."""
    text = document.read_text()
    start = text.index("| variable | processes |")
    end = text.index("\n\n", start)
    document.write_text(text[:start] + markdown() + text[end:])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        write_into(Path(sys.argv[2]) if len(sys.argv) > 2 else SETTINGS_DOC)
    else:
        print(markdown())
