"""Two AIPerf profiles of the HTTP door, run by the ``aiperf`` of its own virtual
environment: streamed ``/v1/completions`` and ``/v1/images/generations``.

AIPerf counts tokens with a Hugging Face tokenizer it looks up by repository id; offline
it reads the Hugging Face cache. So the served model's own tokenizer files are laid out as
a cached repository (``genmedia/gpt2``) in a scratch ``HF_HOME``: nothing is downloaded.
Image prompts must name classes, so they come from the server's own ``ListClasses``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genmedia_shared.paths import REPO_ROOT

AIPERF = REPO_ROOT / ".venv-aiperf" / "bin" / "aiperf"
TOKENIZER_REPO = "genmedia/gpt2"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "config.json",
)
_REVISION = "0" * 40


@dataclass(frozen=True)
class Profile:
    name: str
    arguments: tuple[str, ...]
    figures: tuple[str, ...]
    """The metrics of AIPerf's JSON export this profile reports."""


def profiles(prompts: Path, tokens: int) -> list[Profile]:
    return [
        Profile(
            "completions",
            (
                "--model", "gpt2", "--endpoint-type", "completions", "--streaming",
                "--synthetic-input-tokens-mean", "16", "--output-tokens-mean", str(tokens),
                "--use-legacy-max-tokens", "--use-server-token-count",
            ),
            ("request_throughput", "request_latency", "time_to_first_token",
             "inter_token_latency", "output_token_throughput", "request_error_rate"),
        ),
        Profile(
            "images",
            (
                "--model", "biggan", "--endpoint-type", "image-generation",
                "--input-file", str(prompts), "--custom-dataset-type", "single_turn",
            ),
            ("request_throughput", "request_latency", "request_error_rate"),
        ),
    ]  # fmt: skip


def tokenizer_cache(weights_dir: Path, hf_home: Path) -> Path:
    """``hf_home`` holding the served GPT-2's tokenizer as the cached repository
    ``genmedia/gpt2``; returns ``hf_home``."""
    repository = hf_home / "hub" / ("models--" + TOKENIZER_REPO.replace("/", "--"))
    snapshot = repository / "snapshots" / _REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repository / "refs").mkdir(exist_ok=True)
    (repository / "refs" / "main").write_text(_REVISION)
    for name in TOKENIZER_FILES:
        source = weights_dir / "gpt2" / name
        if source.exists():
            shutil.copyfile(source, snapshot / name)
    return hf_home


def class_prompts(http_url: str, key: str, out: Path, count: int = 20) -> Path:
    """A single-turn AIPerf dataset of class names the server knows, one prompt a line."""
    request = urllib.request.Request(http_url + "/v1/genmedia/classes")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        names = [entry["name"] for entry in json.load(reply)["classes"]][:count]
    out.write_text("".join(json.dumps({"text": name}) + "\n" for name in names))
    return out


def command(
    profile: Profile, http_url: str, key: str, requests: int, concurrency: int, out: Path
) -> list[str]:
    return [
        str(AIPERF), "profile", *profile.arguments,
        "--url", http_url, "--tokenizer", TOKENIZER_REPO,
        "--request-count", str(requests), "--concurrency", str(concurrency),
        "--warmup-request-count", str(min(concurrency, requests)),
        "--ui", "none", "--artifact-dir", str(out / profile.name),
        *(("--api-key", key) if key else ()),
    ]  # fmt: skip


def run(
    profile: Profile,
    http_url: str,
    key: str,
    requests: int,
    concurrency: int,
    out: Path,
    hf_home: Path,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Runs one profile; returns its figures (raises with AIPerf's output if it failed)."""
    done = subprocess.run(
        command(profile, http_url, key, requests, concurrency, out),
        env=os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    export = out / profile.name / "profile_export_aiperf.json"
    if done.returncode != 0 or not export.exists():
        raise RuntimeError(
            f"aiperf {profile.name} exited {done.returncode}:\n"
            + done.stdout[-3000:]
            + done.stderr[-3000:]
        )
    return figures(profile, json.loads(export.read_text()))


def figures(profile: Profile, export: dict[str, Any]) -> dict[str, Any]:
    """The profile's metrics from AIPerf's JSON export: unit, and avg / p50 / p99 where given."""
    picked: dict[str, Any] = {"requests": export.get("request_count", {}).get("avg")}
    for name in profile.figures:
        metric = export.get(name) or {}
        picked[name] = {key: metric[key] for key in ("unit", "avg", "p50", "p99") if key in metric}
    return picked
