"""Settings of the soak (``GENMEDIA_SOAK_*``, or the same names as flags).

``python -m tools.soak.settings`` prints the table of them in docs/TESTING.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from genmedia_shared.paths import REPO_ROOT
from tools import runner_settings


class SoakSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENMEDIA_SOAK_", frozen=True, extra="ignore")

    duration_s: float = Field(
        300.0, gt=0, description="Seconds of steady traffic that are judged, after the warm-up."
    )
    warmup_s: float = Field(
        60.0,
        ge=0,
        description="Seconds of the same traffic first, not judged: caches, pools and "
        "allocator arenas fill up.",
    )
    callers: int = Field(
        4, ge=1, description="Concurrent callers, each calling again as soon as answered."
    )
    sample_every_s: float = Field(
        2.0, gt=0, description="Seconds between samples of each process's memory and fds."
    )
    rss_margin_percent: float = Field(
        5.0,
        ge=0,
        description="Resident memory a process may gain, in percent of its level after the "
        "warm-up (or the MiB below, whichever is larger).",
    )
    rss_margin_mib: float = Field(
        16.0, ge=0, description="Resident memory a process may gain, in MiB (or the percent)."
    )
    fd_margin: int = Field(
        2, ge=0, description="Open file descriptors a process may gain over the soak."
    )
    weights_dir: Path = Field(
        REPO_ROOT / "models" / "demo", description="Weights the soaked stack serves."
    )
    out_dir: Path = Field(
        REPO_ROOT / "out" / "soak",
        description="Where soak.json and soak.png go (overwritten each run).",
    )


def soak_settings(argv: Sequence[str] | None = None) -> SoakSettings:
    overrides: dict[str, Any] = runner_settings.parse_flags(
        SoakSettings,
        "python -m tools.soak",
        "Steady traffic through the local stack for a bounded time; judge memory and fds.",
        argv,
    )
    return runner_settings.settings_from(SoakSettings, overrides)


if __name__ == "__main__":
    print(runner_settings.markdown(SoakSettings))
