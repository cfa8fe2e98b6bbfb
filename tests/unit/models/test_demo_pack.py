"""The demo-pack orchestrator: cards, README sample block, partial rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.training import demo_pack
from tools.training.demo_pack import (
    README_SAMPLE_END,
    README_SAMPLE_START,
    model_card,
    update_readme_sample,
)
from tools.training.report import QualityReport, TrainingReport

REPORT = TrainingReport(
    model="toy",
    architecture="toy net",
    dataset="toy data",
    resolution=32,
    steps=12,
    seconds=3.0,
    parameters=1234,
    details={"lr": "0.1"},
)


def test_the_card_states_figures_targets_and_whether_they_were_met() -> None:
    met = QualityReport({"accuracy": 0.91, "context": 2.5}, {"accuracy": ">= 0.80"}, True, "how")
    card = model_card(REPORT, met, ["a.bin"], "tools.training.toy")
    assert "## Quality (all targets met)" in card
    assert "| accuracy | 0.91 | >= 0.80 |" in card and "| context | 2.5 |  |" in card
    assert "- Steps: 12 in 3 s" in card and "1,234" in card and "32x32 pixels" in card
    missed = QualityReport({"accuracy": 0.5}, {"accuracy": ">= 0.80"}, False, "how")
    assert "TARGETS NOT MET" in model_card(REPORT, missed, [], "x")


def test_the_readme_sample_is_replaced_between_its_markers_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{README_SAMPLE_START}\nold\n{README_SAMPLE_END}\nafter\n")
    update_readme_sample(readme, "[seed 0] Return the value")
    update_readme_sample(readme, "[seed 0] Return the list")  # idempotent shape
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{README_SAMPLE_END}\nafter\n")
    assert "[seed 0] Return the list" in text and "old" not in text and "value" not in text
    assert text.count("```text") == 1


class _Stop(Exception):
    """Ends build() after training, before it samples the whole (absent) pack."""


def test_only_retrains_the_named_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trained: list[str] = []

    def stage(key: str) -> demo_pack.Stage:
        def train(directory: Path, seed: int) -> TrainingReport:
            trained.append(key)
            raise _Stop

        return demo_pack.Stage(key, train, lambda _: None)

    monkeypatch.setattr(demo_pack, "STAGES", tuple(stage(k) for k in ("biggan", "gpt2")))
    with pytest.raises(_Stop):
        demo_pack.build(tmp_path / "out", tmp_path / "docs", None, only=frozenset({"gpt2"}))
    assert trained == ["gpt2"]
