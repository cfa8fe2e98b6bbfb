"""Class catalogue and name resolution, like the seed's ``one_hot_from_names``.

A name resolves, in order, by: exact name or synonym (case-insensitive,
spaces/underscores/hyphens alike); then a single word that appears in the
names of exactly one class ("coffee" -> "coffee mug"). Anything else is an
INVALID_ARGUMENT naming the closest known classes.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument

BUNDLED_CATALOGS = Path(__file__).with_name("data")
DEFAULT_CATALOG = "imagenet"
MAX_NAME_LENGTH = 200
_SUGGESTIONS = 5


@dataclass(frozen=True)
class ImageClass:
    id: int
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[0]


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


class ClassCatalog:
    """The label set of the served generator."""

    def __init__(self, classes: list[ImageClass]) -> None:
        if not classes:
            raise ValueError("a class catalogue needs at least one class")
        self.classes = classes
        self._by_name: dict[str, list[int]] = {}
        self._by_word: dict[str, set[int]] = {}
        for image_class in classes:
            for name in image_class.names:
                key = _normalise(name)
                ids = self._by_name.setdefault(key, [])
                if image_class.id not in ids:
                    ids.append(image_class.id)
                for word in key.split(" "):
                    self._by_word.setdefault(word, set()).add(image_class.id)

    @classmethod
    def load(cls, path: Path) -> ClassCatalog:
        """Reads ``{"classes": [{"id": 0, "names": ["tench", ...]}, ...]}``."""
        document = json.loads(path.read_text(encoding="utf-8"))
        classes = [
            ImageClass(id=int(entry["id"]), names=tuple(entry["names"]))
            for entry in document["classes"]
        ]
        if [c.id for c in classes] != list(range(len(classes))):
            raise ValueError(f"{path}: class ids must be 0..N-1 in order")
        return cls(classes)

    def __len__(self) -> int:
        return len(self.classes)

    def by_id(self, class_id: int) -> ImageClass:
        if not 0 <= class_id < len(self.classes):
            raise InvalidArgument(
                f"class id {class_id} is out of range; valid ids are 0..{len(self.classes) - 1}"
            )
        return self.classes[class_id]

    def resolve(self, name: str) -> ImageClass:
        """Finds the one class ``name`` stands for, or says what to try instead."""
        if not name.strip():
            raise InvalidArgument("class name is empty; give a name such as 'goldfish' or an id")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"class name is longer than {MAX_NAME_LENGTH} characters")
        key = _normalise(name)
        ids = self._by_name.get(key)
        if ids is None and " " not in key:
            word_ids = self._by_word.get(key, set())
            if len(word_ids) == 1:
                ids = list(word_ids)
            elif word_ids:
                raise InvalidArgument(
                    f"class name {name!r} matches several classes: "
                    + self._describe(sorted(word_ids)[:_SUGGESTIONS])
                    + "; use a full name or an id"
                )
        if ids is None:
            suggestions = difflib.get_close_matches(key, self._by_name, n=_SUGGESTIONS, cutoff=0.5)
            hint = (
                "closest: " + ", ".join(repr(s) for s in suggestions)
                if suggestions
                else "use ListClasses to see the names"
            )
            raise InvalidArgument(f"unknown class name {name!r}; {hint}")
        if len(ids) > 1:
            raise InvalidArgument(
                f"class name {name!r} is ambiguous: {self._describe(ids)}; use the id instead"
            )
        return self.classes[ids[0]]

    def search(self, query: str) -> list[ImageClass]:
        key = _normalise(query)
        return [c for c in self.classes if not key or any(key in _normalise(n) for n in c.names)]

    def _describe(self, ids: list[int]) -> str:
        return ", ".join(f"{self.classes[i].name!r} (id {i})" for i in ids)


def catalog_path(name: str) -> Path:
    """A bundled catalogue by name ("imagenet", "digits"), or a file path."""
    bundled = BUNDLED_CATALOGS / f"{name}.json"
    return bundled if bundled.is_file() else Path(name)
