"""``make demo-models``: retrain the whole demo pack, measure it, write its cards.

Trains BigGAN-deep on scikit-learn's digits, a CycleGAN pair between
handwritten and typeset digits, and GPT-2 on the standard library's
docstrings; measures each against the targets of its card; writes the
weights in their real formats with ``genmedia.json`` metadata, a model card
per model, a SHA-256 manifest the launcher verifies, and the README's image
grids and text sample.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from genmedia_models.metadata import write_metadata
from tools.training import biggan_digits, cyclegan_digits, gpt2_docstrings
from tools.training.report import QualityReport, TrainingReport

MANIFEST_FILE = "MANIFEST.sha256"
README_SAMPLE_START = "<!-- demo-text-sample:start -->"
README_SAMPLE_END = "<!-- demo-text-sample:end -->"
TEXT_PROMPT = "Return the"
TEXT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Stage:
    key: str
    train: Callable[..., TrainingReport]
    evaluate: Callable[[Path], QualityReport]


STAGES = (
    Stage("biggan", biggan_digits.train, biggan_digits.evaluate),
    Stage("cyclegan", cyclegan_digits.train, cyclegan_digits.evaluate),
    Stage("gpt2", gpt2_docstrings.train, gpt2_docstrings.evaluate),
)


def model_card(report: TrainingReport, quality: QualityReport, files: list[str], usage: str) -> str:
    rows = "\n".join(
        f"| {name} | {value:.4g} | {quality.targets.get(name, '')} |"
        for name, value in quality.figures.items()
    )
    details = "\n".join(f"- {key}: {value}" for key, value in report.details.items())
    return f"""# Model card: {report.model}

Part of genmedia's demo pack: trained on this machine from data that ships
with installed packages, so `make run` serves real output with no download.
Everything it generates is synthetic and labelled so by genmedia.

## Model
- Architecture: {report.architecture}
- Parameters: {report.parameters:,}
- Resolution: {f"{report.resolution}x{report.resolution} pixels" if report.resolution else "text"}
- Files (real checkpoint format, checked by `MANIFEST.sha256`): {", ".join(files)}

## Training
- Data: {report.dataset}
- Steps: {report.steps:,} in {report.seconds:.0f} s on {torch.get_num_threads()} CPU threads
{details}
- Reproduce: `make demo-models` (all three models), or the module's own
  `python -m {usage}`.

## Quality ({"all targets met" if quality.passed else "TARGETS NOT MET"})

| figure | value | target |
|---|---|---|
{rows}

{quality.method}

## Intended use and limits
A demonstration of the serving stack: small, fast on a CPU, recognisable
output. Not a model of real people or places; not for any decision.
"""


def _relative_files(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and p.name not in ("MODEL_CARD.md", "genmedia.json")
    )


def write_metadata_for(stage: str, directory: Path, report: TrainingReport) -> None:
    if stage == "biggan":
        write_metadata(
            directory, report.model, "BigGAN-deep", report.resolution, report.dataset, "digits"
        )
    elif stage == "cyclegan":
        for direction in cyclegan_digits.DIRECTIONS:
            write_metadata(
                directory / direction,
                f"{report.model}-{direction}",
                "CycleGAN ResNet generator",
                report.resolution,
                report.dataset,
            )
    else:
        write_metadata(directory, report.model, "GPT-2", 0, report.dataset)


def text_samples(model_dir: Path) -> str:
    """One continuation of TEXT_PROMPT per seed in TEXT_SEEDS (not picked: all of them)."""
    return "\n\n".join(
        f"[seed {seed}] {TEXT_PROMPT}"
        + gpt2_docstrings.sample_text(model_dir, prompt=TEXT_PROMPT, seed=seed)
        for seed in TEXT_SEEDS
    )


def update_readme_sample(readme: Path, samples: str) -> None:
    text = readme.read_text()
    if README_SAMPLE_START not in text:
        return
    head, rest = text.split(README_SAMPLE_START, 1)
    _, tail = rest.split(README_SAMPLE_END, 1)
    block = f"\n```text\n{samples}\n```\n"
    readme.write_text(head + README_SAMPLE_START + block + README_SAMPLE_END + tail)


def build(
    out: Path,
    docs: Path,
    readme: Path | None,
    seed: int = 0,
    only: frozenset[str] | None = None,
) -> bool:
    """Trains and measures the models (all, or those in ``only``; the others are kept
    as they are); returns whether every retrained model met its quality targets.
    The grids, text samples and manifest are always remade from the whole pack."""
    from services.launcher.repository import write_manifest

    started = time.monotonic()
    docs.mkdir(parents=True, exist_ok=True)
    all_passed = True
    stages = [stage for stage in STAGES if only is None or stage.key in only]
    for stage in tqdm(stages, desc="demo pack", unit="model"):
        directory = out / stage.key
        report = stage.train(directory, seed=seed)
        quality = stage.evaluate(directory)
        all_passed &= quality.passed
        write_metadata_for(stage.key, directory, report)
        usage = f"tools.training.{stage.train.__module__.rsplit('.', 1)[-1]}"
        card = model_card(report, quality, _relative_files(directory), usage)
        (directory / "MODEL_CARD.md").write_text(card)
        tqdm.write(f"{report.model}: {quality.figures} ({'ok' if quality.passed else 'FAILED'})")
    biggan_digits.sample_grid(out / "biggan", docs / "biggan-digits.png")
    cyclegan_digits.sample_grid(out / "cyclegan", docs / "cyclegan-digits.png")
    samples = text_samples(out / "gpt2")
    (docs / "gpt2-sample.txt").write_text(samples + "\n")
    if readme is not None:
        update_readme_sample(readme, samples)
    write_manifest(out)
    tqdm.write(f"demo pack written to {out} in {time.monotonic() - started:.0f} s")
    return all_passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/demo"))
    parser.add_argument("--docs", type=Path, default=Path("docs/demo"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[stage.key for stage in STAGES],
        help="retrain just these models, keeping the rest of the pack",
    )
    args = parser.parse_args()
    only = frozenset(args.only) if args.only else None
    if not build(args.out, args.docs, args.readme, args.seed, only):
        raise SystemExit("some quality targets were not met: see the model cards")


if __name__ == "__main__":
    main()
