from pathlib import Path

from services.common.settings_table import markdown, rows

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_the_generated_one() -> None:
    assert markdown() in README.read_text(), (
        "README's settings table is stale: paste `python -m services.common.settings_table`"
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


def test_readme_lists_every_metric_the_processes_export() -> None:
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
    observability = README.read_text().split("## Observability", 1)[1]
    missing = sorted(name for name in ours if f"`{name}" not in observability)
    assert not missing, f"README's Observability table misses {missing}"
