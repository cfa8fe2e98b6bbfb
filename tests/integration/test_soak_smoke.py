"""A short run of the soak behind `make soak` against the session stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.registry import ALL_PROCESSES
from services.launcher.stack import Stack
from tools.soak.report import summary, write
from tools.soak.run import soak
from tools.soak.settings import SoakSettings

pytestmark = pytest.mark.integration


def test_soak_smoke_no_call_fails_and_every_process_stays_flat(
    stack: Stack, tmp_path: Path
) -> None:
    # Twenty seconds cannot tell a leak from an allocator settling (a model stub's RSS
    # has stepped up 12% once in such a window): the smoke allows 20%; `make soak`
    # judges 5% over minutes.
    settings = SoakSettings(
        duration_s=20,
        warmup_s=8,
        callers=3,
        sample_every_s=1,
        rss_margin_percent=20,
        out_dir=tmp_path,
    )
    result = soak(stack, settings, show_progress=False)
    print(summary(result, settings))

    assert len(result.calls) > 20
    assert result.failed_calls() == []
    judged = {v.name for v in result.verdicts}
    assert {p.name for p in ALL_PROCESSES} | {"tritonserver"} <= judged
    assert sum(name.startswith("stub ") for name in judged) == 4  # one per model
    assert all(v.samples >= 15 for v in result.verdicts)
    assert all(v.flat for v in result.verdicts), summary(result, settings)
    assert result.passed

    json_path, png_path = write(result, settings)
    document = json.loads(json_path.read_text())
    assert document["passed"] is True and document["calls"] == {"OK": len(result.calls)}
    assert png_path.read_bytes().startswith(b"\x89PNG")
