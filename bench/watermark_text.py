"""How well the text watermark is found, and how rarely it is imagined (issue #10).

    python -m bench.watermark_text            # make bench runs it
    python -m bench.watermark_text --quick    # a smoke run

Generates continuations with the demo pack's GPT-2 and the watermark on (the
served defaults: gamma 0.25, delta 2.0, temperature 1.0), prompted with the
first 8 tokens of 200-token windows of held-out docstrings, and scores them
the way VerifyText does (the decoded text tokenized again). Human text is
those windows: the held-out side of the corpus the demo model was trained
on, which it never saw. Writes
``watermark-text.json`` and ``watermark-text.png`` into ``bench/results/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from bench.common import DEMO_WEIGHTS, figure_bench_arguments, publish
from genmedia_models.gpt2.batching import generate_one
from genmedia_models.gpt2.loading import load_gpt2
from genmedia_models.gpt2.sampling import SamplingParams
from genmedia_models.gpt2.watermark import DEVELOPMENT_KEY, GreenList
from services.common.text_watermark import WatermarkDetector
from tools.figures import pyplot, save_figure
from tools.training.gpt2_docstrings import build_corpus

LENGTHS = (50, 200)
Z_THRESHOLD = 4.0
PROMPT_TOKENS = 8


def measure(weights: Path, samples: int, progress: bool = True) -> dict[str, Any]:
    torch.manual_seed(0)
    model = load_gpt2(weights / "gpt2")
    tokenizer = Tokenizer.from_file(str(weights / "gpt2" / "tokenizer.json"))
    vocab = int(model.config.vocab_size)
    watermark = GreenList(DEVELOPMENT_KEY, vocab)
    detector = WatermarkDetector(DEVELOPMENT_KEY, vocab, watermark.gamma)
    # Held-out docstrings one after the other, cut into windows of the longest length.
    stream = tokenizer.encode("\n\n".join(d.text for d in build_corpus().heldout)).ids
    window = max(LENGTHS)
    documents = [stream[i : i + window] for i in range(0, len(stream) - window, window)][:samples]

    z: dict[str, dict[int, list[float]]] = {"watermarked": {}, "human": {}}
    for length in LENGTHS:
        z["watermarked"][length], z["human"][length] = [], []
    short = 0
    for seed, ids in enumerate(tqdm(documents, desc="watermark", disable=not progress)):
        for length in LENGTHS:
            z["human"][length].append(detector.score(ids[:length]).z_score)
        params = SamplingParams(max_new_tokens=max(LENGTHS) + 20, temperature=1.0, seed=seed)
        # End-of-text does not stop it: a long text is what is measured, as if
        # a caller joined several answers.
        new = list(generate_one(model, ids[:PROMPT_TOKENS], params, watermark=watermark))
        # What a verifier gets: the generated text, tokenized again.
        seen = tokenizer.encode(tokenizer.decode(new)).ids
        for length in LENGTHS:
            if len(seen) >= length:
                z["watermarked"][length].append(detector.score(seen[:length]).z_score)
        short += len(seen) < max(LENGTHS)
    rows = []
    for kind, label in (("watermarked", "detection rate"), ("human", "false-positive rate")):
        for length in LENGTHS:
            scores = z[kind][length]
            rate = sum(s >= Z_THRESHOLD for s in scores) / len(scores) if scores else float("nan")
            rows.append({
                "text": kind, "tokens": length, "measure": label, "rate": rate,
                "samples": len(scores), "mean_z": sum(scores) / len(scores) if scores else 0.0,
            })  # fmt: skip
    return {
        "gamma": watermark.gamma,
        "delta": watermark.delta,
        "z_threshold": Z_THRESHOLD,
        "windows": len(documents),
        "generations_shorter_than_200": short,
        "rows": rows,
        "z": {kind: {str(k): v for k, v in by.items()} for kind, by in z.items()},
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        f"text watermark: gamma {results['gamma']}, delta {results['delta']}, "
        f"z >= {results['z_threshold']:g}; {results['windows']} windows of held-out text",
        f"{'text':12s}{'tokens':>7s}  {'measure':22s}{'rate':>7s}{'samples':>9s}{'mean z':>8s}",
    ]
    for row in results["rows"]:
        lines.append(
            f"{row['text']:12s}{row['tokens']:7d}  {row['measure']:22s}{row['rate']:7.1%}"
            f"{row['samples']:9d}{row['mean_z']:8.2f}"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, panels = plt.subplots(1, len(LENGTHS), figsize=(12, 4.5))
    for axes, length in zip(panels, LENGTHS, strict=True):
        for kind, colour in (("human", "tab:blue"), ("watermarked", "tab:red")):
            axes.hist(results["z"][kind][str(length)], bins=25, alpha=0.6, color=colour,
                      label=f"{kind} ({len(results['z'][kind][str(length)])})")  # fmt: skip
        axes.axvline(results["z_threshold"], color="black", linestyle="--", label="threshold")
        axes.set_title(f"first {length} tokens")
        axes.set_xlabel("z-score")
        axes.legend()
    figure.suptitle("text watermark: z-scores of generated and held-out human text (demo GPT-2)")
    save_figure(figure, path)


def main() -> None:
    parser = figure_bench_arguments(__doc__)
    parser.add_argument("--weights", type=Path, default=DEMO_WEIGHTS)
    args = parser.parse_args()
    results = measure(args.weights, samples=4 if args.quick else 100)
    publish(results, "watermark-text", report, plot, args.out)


if __name__ == "__main__":
    main()
