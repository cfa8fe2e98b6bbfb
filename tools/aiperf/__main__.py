"""python -m tools.aiperf: AIPerf profiles of the HTTP door (``make aiperf``).

Without ``--target`` it starts the local stack on the demo pack with an API key (as
``make load`` does), runs the profiles, prints their figures, writes
``out/aiperf/summary.json`` beside AIPerf's own exports, and stops the stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genmedia_shared.paths import REPO_ROOT
from tools.aiperf import profiles
from tools.keyed_stack import stack_with_api_key


@contextlib.contextmanager
def http_door(target: str, weights: Path) -> Iterator[tuple[str, str]]:
    """(URL, API key) of the door to profile: ``target``'s, or a local stack's."""
    if target:
        yield target.rstrip("/"), os.environ.get("GENMEDIA_API_KEY", "")
        return
    with (
        tempfile.TemporaryDirectory(prefix="genmedia-aiperf-") as scratch,
        stack_with_api_key(weights.resolve(), Path(scratch), progress=print) as (stack, key),
    ):
        yield stack.gateways[0].http_url, key


def report(summary: dict[str, Any]) -> str:
    lines = []
    for name, figures in summary["profiles"].items():
        lines.append(f"{name}: {figures['requests']:.0f} requests")
        for metric, value in figures.items():
            if isinstance(value, dict) and value:
                numbers = ", ".join(
                    f"{key} {value[key]:.2f}" for key in ("avg", "p50", "p99") if key in value
                )
                lines.append(f"  {metric:28s} {numbers} {value.get('unit', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        default=os.environ.get("GENMEDIA_AIPERF_TARGET", ""),
        help="URL of a running gateway's HTTP door (key: GENMEDIA_API_KEY)",
    )
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "models" / "demo")
    parser.add_argument("--requests", type=int, default=200, help="per profile")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="output tokens a completion")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "aiperf")
    args = parser.parse_args(argv)  # fmt: skip
    if not profiles.AIPERF.exists():
        sys.exit(f"{profiles.AIPERF} is missing: run `make aiperf-tools`")
    args.out.mkdir(parents=True, exist_ok=True)
    with http_door(args.target, args.weights) as (url, key), tempfile.TemporaryDirectory() as hf:
        hf_home = profiles.tokenizer_cache(args.weights, Path(hf))
        prompts = profiles.class_prompts(url, key, args.out / "class_prompts.jsonl")
        summary: dict[str, Any] = {"target": url, "concurrency": args.concurrency, "profiles": {}}
        for profile in profiles.profiles(prompts, args.tokens):
            print(f"aiperf {profile.name}: {args.requests} requests at {args.concurrency}...")
            summary["profiles"][profile.name] = profiles.run(
                profile, url, key, args.requests, args.concurrency, args.out, hf_home
            )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(report(summary))
    print(f"written: {args.out / 'summary.json'} and AIPerf's exports under {args.out}")


if __name__ == "__main__":
    main()
