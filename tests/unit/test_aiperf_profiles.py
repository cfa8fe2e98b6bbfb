"""`make aiperf`'s pieces without AIPerf: the offline tokenizer cache, the commands, the
figures read from AIPerf's export."""

from __future__ import annotations

from pathlib import Path

from tools.aiperf import profiles


def test_the_served_tokenizer_is_laid_out_as_a_cached_repository(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    (weights / "gpt2").mkdir(parents=True)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (weights / "gpt2" / name).write_text(name)
    hf_home = profiles.tokenizer_cache(weights, tmp_path / "hf")
    repository = hf_home / "hub" / "models--genmedia--gpt2"
    revision = (repository / "refs" / "main").read_text()
    snapshot = repository / "snapshots" / revision
    assert sorted(path.name for path in snapshot.iterdir()) == [
        "merges.txt", "tokenizer.json", "vocab.json",
    ]  # fmt: skip
    assert (snapshot / "vocab.json").read_text() == "vocab.json"


def test_each_profile_is_one_aiperf_command_with_the_key_only_when_there_is_one(
    tmp_path: Path,
) -> None:
    completions, images = profiles.profiles(tmp_path / "prompts.jsonl", tokens=32)
    command = profiles.command(completions, "http://h:8080", "", 10, 4, tmp_path)
    assert command[:2] == [str(profiles.AIPERF), "profile"]
    assert "--streaming" in command and "--api-key" not in command
    assert command[command.index("--output-tokens-mean") + 1] == "32"
    assert command[command.index("--artifact-dir") + 1] == str(tmp_path / "completions")
    keyed = profiles.command(images, "http://h:8080", "gm_x", 10, 4, tmp_path)
    assert keyed[keyed.index("--api-key") + 1] == "gm_x"
    assert keyed[keyed.index("--input-file") + 1] == str(tmp_path / "prompts.jsonl")


def test_figures_keep_the_profiles_metrics_and_their_statistics() -> None:
    completions = profiles.profiles(Path("p"), tokens=8)[0]
    export = {
        "request_count": {"unit": "requests", "avg": 6.0},
        "time_to_first_token": {"unit": "ms", "avg": 5.0, "p50": 4.0, "p99": 9.0, "std": 1.0},
        "request_error_rate": {"unit": "%", "avg": 0.0},
    }
    figures = profiles.figures(completions, export)
    assert figures["requests"] == 6.0
    assert figures["time_to_first_token"] == {"unit": "ms", "avg": 5.0, "p50": 4.0, "p99": 9.0}
    assert figures["inter_token_latency"] == {}  # absent from the export: empty, not invented
