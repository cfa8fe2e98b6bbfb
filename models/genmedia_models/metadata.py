"""``genmedia.json`` beside each model's weights: what the weights are.

The launcher copies these fields into the served Triton config as
``genmedia_*`` parameters, and the services report them (ListClasses,
ListModels). ``genmedia models fetch`` writes the same file for published
checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

METADATA_FILE = "genmedia.json"


def write_metadata(
    directory: Path,
    name: str,
    architecture: str,
    resolution: int,
    dataset: str,
    classes: str | None = None,
) -> Path:
    """``classes`` names the label set for class-conditional models ("imagenet", "digits")."""
    fields: dict[str, object] = {
        "name": name,
        "architecture": architecture,
        "resolution": resolution,
        "dataset": dataset,
    }
    if classes is not None:
        fields["classes"] = classes
    path = directory / METADATA_FILE
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    return path
