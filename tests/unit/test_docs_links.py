"""The README is a front page, and every relative link of the documentation leads somewhere.

Checks README.md, docs/*.md and deploy/README.md: each markdown link and image whose
target is a path (not http(s), not a pure #anchor) names a file or folder of the
repository, resolved from the page that holds it; ``path#anchor`` checks the path.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_README_LINES = 300

# [text](target) and ![alt](target); the target ends at whitespace (a title may follow).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[^)]*)?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), REPO_ROOT / "deploy" / "README.md"]


def link_targets(text: str) -> list[str]:
    """Every link and image target outside code blocks and code spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return LINK.findall(prose)


def test_link_targets_are_found_in_prose_only() -> None:
    text = (
        'See [a](docs/A.md#part) and ![b](../img/b.png "title").\n'
        "`[not](code.md)`\n```\n[not](fenced.md)\n```\n[c](https://example.com) [d](#here)\n"
    )
    assert link_targets(text) == ["docs/A.md#part", "../img/b.png", "https://example.com", "#here"]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_names_a_file_of_the_repository(page: Path) -> None:
    assert page.is_file(), page
    missing = []
    for target in link_targets(page.read_text()):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (page.parent / path).resolve()
        if not resolved.is_relative_to(REPO_ROOT) or not resolved.exists():
            missing.append(target)
    assert not missing, (
        f"{page.relative_to(REPO_ROOT)} links to files that are not there: {missing}"
    )


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/ (at most {MAX_README_LINES})"
    )


def test_readme_contents_link_every_docs_page() -> None:
    text = README.read_text()
    assert "\n## Contents\n" in text, "README.md has no '## Contents' section"
    contents = text.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
    linked = {(REPO_ROOT / target.split("#", 1)[0]).resolve() for target in link_targets(contents)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README's contents do not link {unlinked}"
