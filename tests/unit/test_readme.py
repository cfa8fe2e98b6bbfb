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
