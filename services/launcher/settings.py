"""Settings of the local launcher (``GENMEDIA_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from genmedia_shared.paths import REPO_ROOT
from services.common.settings import ENV_PREFIX


class LauncherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    weights_dir: Path = Field(
        REPO_ROOT / "models" / "demo",
        description=(
            "Root of the weights to serve: `models/demo` (the committed demo pack), a "
            "`genmedia models fetch` target, or `var/weights` (`make weights`, random test "
            "checkpoints)."
        ),
    )
    work_dir: Path = Field(
        REPO_ROOT / "var" / "run", description="Launcher scratch: backend dir and process logs."
    )
    startup_timeout_s: float = Field(300.0, gt=0, description="Longest wait for all-healthy.")
    gateway_replicas: int = Field(
        1,
        ge=1,
        le=16,
        description="Gateways to start. With more than one, a local redis-server holds the "
        "quotas they share; the first gateway listens on 50051, the others on free ports, "
        "all listed in `var/run/gateways.txt`.",
    )
