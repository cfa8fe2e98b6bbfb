"""The model repository Triton serves, built from the weights that are there.

``models/repository`` holds the sources: one ``config.pbtxt`` + ``1/model.py``
per model, ``cyclegan`` being the source of every CycleGAN direction. The
served repository gets

- ``biggan`` and ``gpt2`` when their weights exist,
- one ``cyclegan_<direction>`` per ``cyclegan/<direction>/latest_net_G.pth``,

each config extended with ``genmedia_*`` parameters copied from the
``genmedia.json`` beside the weights (name, architecture, resolution,
dataset, classes). The services read them back from Triton
(``get_model_config``), so what they report is what Triton loaded.

``python -m services.launcher.repository --weights DIR --out DIR`` builds one
(the Kubernetes init step runs the same command). ``--instance-kind`` and
``--instance-count`` (or ``GENMEDIA_TRITON_INSTANCE_KIND`` / ``_COUNT``)
replace every model's instance group, e.g. ``KIND_GPU`` x2 on a GPU node; by
default the sources' ``KIND_AUTO`` x1 stays. ``--parameter MODEL.KEY=VALUE``
(repeatable; or ``GENMEDIA_TRITON_MODEL_PARAMETERS``, space-separated)
replaces a string parameter a model's config already declares, e.g.
``gpt2.max_sequences=32``. Test-only parameters (``test_delay_ms``, ``test_fail_step``) are in
no shipped config: only an explicit override adds them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Beside the services tree, in a checkout and in the Triton image alike; this module runs
# there with the standard library only.
SOURCE_REPOSITORY = Path(__file__).resolve().parents[2] / "models" / "repository"
CYCLEGAN_SOURCE = "cyclegan"
TEST_ONLY_PARAMETERS = ("test_delay_ms", "test_fail_step")
"""Knobs of the fault tests: added to a served config on request, never shipped in one."""
METADATA_FILE = "genmedia.json"
MANIFEST_FILE = "MANIFEST.sha256"
PARAMETER_PREFIX = "genmedia_"
INSTANCE_KIND_ENV = "GENMEDIA_TRITON_INSTANCE_KIND"
INSTANCE_COUNT_ENV = "GENMEDIA_TRITON_INSTANCE_COUNT"
PARAMETERS_ENV = "GENMEDIA_TRITON_MODEL_PARAMETERS"
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")
_INSTANCE_GROUP_BLOCK = re.compile(r"^instance_group \[\n.*?^\]\n", re.MULTILINE | re.DOTALL)


class WeightsError(RuntimeError):
    """The weights directory cannot be served as it is."""


@dataclass(frozen=True)
class InstanceGroup:
    """Where and how many copies of each model Triton runs."""

    kind: str = "KIND_AUTO"
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in INSTANCE_KINDS:
            raise WeightsError(f"instance kind {self.kind!r} is not one of {INSTANCE_KINDS}")
        if self.count < 1:
            raise WeightsError(f"instance count must be at least 1, not {self.count}")

    def block(self) -> str:
        return f"instance_group [\n  {{\n    count: {self.count}\n    kind: {self.kind}\n  }}\n]\n"


def parse_parameter(text: str) -> tuple[str, str, str]:
    """``MODEL.KEY=VALUE`` -> (model, key, value)."""
    target, equals, value = text.partition("=")
    model, dot, key = target.partition(".")
    if not (equals and dot and model and key):
        raise WeightsError(f"parameter {text!r} is not MODEL.KEY=VALUE (e.g. gpt2.max_sequences=8)")
    return model, key, value


def _with_overrides(config: str, model: str, overrides: Mapping[str, str]) -> str:
    for key, value in overrides.items():
        prefix = r'(parameters \{\n  key: "' + re.escape(key) + r'"\n  value: \{ string_value: )'
        replacement = json.dumps(value).replace("\\", "\\\\")
        config, count = re.subn(prefix + r'"[^"\n]*"', r"\g<1>" + replacement, config)
        if count == 0 and key in TEST_ONLY_PARAMETERS:
            config += _parameter_block(key, value)
        elif count != 1:
            raise WeightsError(f"model {model} has no parameter {key!r} to replace")
    return config


@dataclass(frozen=True)
class ServedModels:
    biggan: bool
    directions: tuple[str, ...]
    gpt2: bool

    @property
    def triton_models(self) -> list[str]:
        names = ["biggan"] if self.biggan else []
        names += [f"cyclegan_{d}" for d in self.directions]
        return names + (["gpt2"] if self.gpt2 else [])


def discover(weights_dir: Path) -> ServedModels:
    directions = sorted(
        path.parent.name for path in (weights_dir / "cyclegan").glob("*/latest_net_G.pth")
    )
    return ServedModels(
        biggan=(weights_dir / "biggan" / "config.json").is_file(),
        directions=tuple(directions),
        gpt2=(weights_dir / "gpt2" / "config.json").is_file(),
    )


def verify_manifest(weights_dir: Path) -> int:
    """Checks every file a ``MANIFEST.sha256`` lists; returns how many. No manifest: 0."""
    manifest = weights_dir / MANIFEST_FILE
    if not manifest.is_file():
        return 0
    checked = 0
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        expected, _, relative = line.partition("  ")
        path = weights_dir / relative
        if not path.is_file():
            raise WeightsError(f"{path} is listed in {manifest} but missing")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise WeightsError(
                f"{path} does not match {manifest} (sha256 {actual}, expected {expected}); "
                "restore it from git or rebuild with `make demo-models`"
            )
        checked += 1
    return checked


def write_manifest(weights_dir: Path) -> Path:
    """Lists the SHA-256 of every file under ``weights_dir`` (not the manifest itself)."""
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(weights_dir)}"
        for path in sorted(weights_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    ]
    manifest = weights_dir / MANIFEST_FILE
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _metadata(model_dir: Path) -> dict[str, object]:
    path = model_dir / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _parameter_block(key: str, value: str) -> str:
    return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: {json.dumps(value)} }}\n}}\n'


def _with_parameters(config: str, metadata: dict[str, object]) -> str:
    blocks = [
        _parameter_block(PARAMETER_PREFIX + key, str(metadata[key]))
        for key in ("name", "architecture", "resolution", "dataset", "classes")
        if key in metadata
    ]
    header = "\n# From genmedia.json beside the weights (services/launcher/repository.py).\n"
    return config.rstrip("\n") + "\n" + (header + "".join(blocks) if blocks else "")


def _with_instance_group(config: str, group: InstanceGroup | None) -> str:
    if group is None:
        return config
    replaced, count = _INSTANCE_GROUP_BLOCK.subn(group.block(), config)
    if count != 1:
        raise WeightsError(f"expected one instance_group block in the config, found {count}")
    return replaced


def _add_model(out_dir: Path, name: str, source: Path, config: str) -> None:
    target = out_dir / name
    target.mkdir(parents=True)
    (target / "config.pbtxt").write_text(config)
    (target / "1").symlink_to(source / "1", target_is_directory=True)


def build_repository(
    weights_dir: Path,
    out_dir: Path,
    instance_group: InstanceGroup | None = None,
    parameters: Mapping[str, Mapping[str, str]] | None = None,
) -> ServedModels:
    """Writes the served repository for ``weights_dir`` into ``out_dir`` (replaced).

    ``parameters`` maps a model name to replacements of its config's string
    parameters.
    """
    parameters = parameters or {}
    served = discover(weights_dir)
    unknown = sorted(set(parameters) - set(served.triton_models))
    if unknown:
        raise WeightsError(f"parameters given for models not served: {', '.join(unknown)}")
    if not served.triton_models:
        raise WeightsError(f"no model weights under {weights_dir}")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for name, present in (("biggan", served.biggan), ("gpt2", served.gpt2)):
        if present:
            source = SOURCE_REPOSITORY / name
            config = _with_instance_group((source / "config.pbtxt").read_text(), instance_group)
            config = _with_overrides(config, name, parameters.get(name, {}))
            _add_model(
                out_dir, name, source, _with_parameters(config, _metadata(weights_dir / name))
            )
    reference = SOURCE_REPOSITORY / CYCLEGAN_SOURCE
    reference_config = _with_instance_group(
        (reference / "config.pbtxt").read_text(), instance_group
    )
    for direction in served.directions:
        name = f"cyclegan_{direction}"
        config = reference_config.replace(f'name: "{CYCLEGAN_SOURCE}"', f'name: "{name}"')
        config = _with_overrides(config, name, parameters.get(name, {}))
        metadata = _metadata(weights_dir / "cyclegan" / direction)
        _add_model(out_dir, name, reference, _with_parameters(config, metadata))
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="weights root")
    parser.add_argument("--out", type=Path, required=True, help="repository to write")
    parser.add_argument(
        "--instance-kind",
        choices=INSTANCE_KINDS,
        default=os.environ.get(INSTANCE_KIND_ENV) or None,
        help=f"replace every model's instance group kind (env {INSTANCE_KIND_ENV})",
    )
    parser.add_argument(
        "--instance-count",
        type=int,
        default=int(os.environ.get(INSTANCE_COUNT_ENV) or 1),
        help=f"instances per model with --instance-kind (env {INSTANCE_COUNT_ENV})",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=os.environ.get(PARAMETERS_ENV, "").split(),
        metavar="MODEL.KEY=VALUE",
        help=f"replace a string parameter of a model's config (repeatable; env {PARAMETERS_ENV})",
    )
    args = parser.parse_args()
    try:
        group = (
            InstanceGroup(args.instance_kind, args.instance_count) if args.instance_kind else None
        )
        overrides: dict[str, dict[str, str]] = {}
        for text in args.parameter:
            model, key, value = parse_parameter(text)
            overrides.setdefault(model, {})[key] = value
        verify_manifest(args.weights)
        served = build_repository(args.weights, args.out, group, overrides)
    except WeightsError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{args.out}: {', '.join(served.triton_models)}")


if __name__ == "__main__":
    main()
