"""The committed demo pack (models/demo) is whole: what the launcher verifies, the
cards and README show, and the size budget."""

from __future__ import annotations

import json
import re

import pytest

from genmedia_shared.paths import REPO_ROOT
from services.launcher.repository import MANIFEST_FILE, discover, verify_manifest
from services.launcher.settings import LauncherSettings

DEMO = REPO_ROOT / "models" / "demo"
README = REPO_ROOT / "README.md"
MAX_BYTES = 40 * 1024 * 1024


def test_the_launcher_serves_the_demo_pack_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENMEDIA_WEIGHTS_DIR", raising=False)
    assert LauncherSettings().weights_dir == DEMO


def test_every_file_matches_the_manifest_and_the_manifest_lists_every_file() -> None:
    listed = {line.split("  ", 1)[1] for line in (DEMO / MANIFEST_FILE).read_text().splitlines()}
    present = {
        str(p.relative_to(DEMO)) for p in DEMO.rglob("*") if p.is_file() and p.name != MANIFEST_FILE
    }
    assert listed == present
    assert verify_manifest(DEMO) == len(present)


def test_the_pack_serves_all_three_services_and_fits_the_size_budget() -> None:
    found = discover(DEMO)
    assert found.biggan and found.gpt2
    assert found.directions == ("handwritten2typeset", "typeset2handwritten")
    assert sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) < MAX_BYTES


def test_every_model_card_reports_its_targets_met() -> None:
    for card in ("biggan", "cyclegan", "gpt2"):
        text = (DEMO / card / "MODEL_CARD.md").read_text()
        assert "## Quality (all targets met)" in text, card
        for heading in ("## Model", "## Training", "- Data:", "- Steps:", "- Architecture:"):
            assert heading in text, (card, heading)


def test_metadata_names_the_digit_catalogue_and_the_resolution() -> None:
    biggan = json.loads((DEMO / "biggan" / "genmedia.json").read_text())
    assert (biggan["classes"], biggan["resolution"]) == ("digits", 32)
    for direction in ("handwritten2typeset", "typeset2handwritten"):
        meta = json.loads((DEMO / "cyclegan" / direction / "genmedia.json").read_text())
        assert meta["resolution"] == 32


def test_readme_shows_the_grids_and_a_text_sample_made_by_the_script() -> None:
    text = README.read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
        assert (REPO_ROOT / image).is_file(), image
    assert "docs/demo/biggan-digits.png" in text and "docs/demo/cyclegan-digits.png" in text
    sample = text.split("<!-- demo-text-sample:start -->", 1)[1].split(
        "<!-- demo-text-sample:end -->", 1
    )[0]
    written = (REPO_ROOT / "docs" / "demo" / "gpt2-sample.txt").read_text().strip()
    assert written and written in sample
