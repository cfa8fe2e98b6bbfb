"""Settings of the load-test runner (``GENMEDIA_LOAD_*``, or the same names as flags).

``python -m tools.load.settings`` prints the table of them in docs/TESTING.md.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from genmedia_shared.paths import REPO_ROOT
from tools import runner_settings

ENV_PREFIX = "GENMEDIA_LOAD_"


class LoadSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    users: int = Field(20, ge=1, description="Concurrent locust users at full load.")
    spawn_rate: float = Field(5.0, gt=0, description="Users started per second until all run.")
    run_time_s: int = Field(
        60, ge=1, description="Seconds of load (locust's --run-time), ramp-up included."
    )
    target: str = Field(
        "",
        description="host:port of a running gateway to load (its API key from "
        "`GENMEDIA_API_KEY` or `GENMEDIA_API_KEY_FILE`); unset: start the local stack on free "
        "ports with an API key of its own, and stop it afterwards.",
    )
    http_target: str = Field(
        "",
        description="URL of that gateway's HTTP door (e.g. `http://gateway:8080`): OpenAI-API "
        "users join the gRPC ones. The local stack's door is always loaded.",
    )
    weights_dir: Path = Field(
        REPO_ROOT / "models" / "demo",
        description="Weights the local stack serves when no target is given.",
    )
    out_dir: Path = Field(
        REPO_ROOT / "out" / "load",
        description="Where locust's CSVs and HTML report, load.png and locust.log go "
        "(overwritten each run).",
    )
    max_failure_percent: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Exit with status 3 when more than this share of requests failed; unset: "
        "failures are reported, not judged.",
    )
    locust_args: str = Field(
        "",
        description="More locust options, shell-quoted, e.g. `--processes 2` or "
        "`--stop-timeout 10 TextGenerationUser`.",
    )

    def extra_locust_args(self) -> list[str]:
        return shlex.split(self.locust_args)


def parse_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return runner_settings.parse_flags(
        LoadSettings,
        "python -m tools.load",
        "Load the gateway with locust for a bounded time; report, plot, summarise.",
        argv,
    )


def load_settings(argv: Sequence[str] | None = None) -> LoadSettings:
    """Flags over environment over defaults; a bad value exits naming the variable."""
    return runner_settings.settings_from(LoadSettings, parse_args(argv))


def markdown() -> str:
    return runner_settings.markdown(LoadSettings)


if __name__ == "__main__":
    print(markdown())
