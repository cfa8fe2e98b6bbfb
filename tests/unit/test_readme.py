"""The README's quick start, and the docs tables that must follow the code (settings, metrics)."""

from pathlib import Path

from services.common.settings_table import SETTINGS_DOC, markdown, rows

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
OPERATIONS = REPO_ROOT / "docs" / "OPERATIONS.md"


def test_settings_doc_table_is_the_generated_one() -> None:
    assert markdown() in SETTINGS_DOC.read_text(), (
        "docs/SETTINGS.md's settings table is stale: run "
        "`python -m services.common.settings_table --write`"
    )


def test_every_setting_has_a_description() -> None:
    assert all(row.description for row in rows().values())


def test_readme_quick_start_is_the_two_make_commands() -> None:
    text = README.read_text()
    quick_start = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in quick_start.strip().splitlines()] == [
        "make run",
        "make test",
    ]


def test_operations_doc_lists_every_metric_the_processes_export() -> None:
    # Importing the modules registers their metrics in the default registry.
    from prometheus_client import REGISTRY

    import services.gateway.metrics
    import services.image_generation.generator
    import services.image_translation.translator
    import services.text_generation.generator  # noqa: F401

    ours = {
        metric.name
        for metric in REGISTRY.collect()
        if metric.name.startswith(("grpc_", "genmedia_"))
    }
    assert len(ours) >= 20
    observability = OPERATIONS.read_text().split("## Observability", 1)[1]
    missing = sorted(name for name in ours if f"`{name}" not in observability)
    assert not missing, f"docs/OPERATIONS.md's Observability table misses {missing}"
