"""The arithmetic behind the bench figures, on samples made up for the purpose."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytorch_pretrained_biggan import BigGANConfig

from bench import batching, streams
from bench.__main__ import overhead_runs, verdicts
from bench.full_size import BIGGAN_DEEP_LAYERS, FullSizeSet, biggan_config, write_full_size
from bench.serving import ServingBench, ServingSizes
from bench.workloads import StreamTiming, Workloads, gradient_image


def test_stream_inter_token_latency_is_the_time_after_the_first_token_per_later_token() -> None:
    timing = StreamTiming(first_s=0.010, total_s=0.100, tokens=10)
    assert timing.inter_token_s == pytest.approx(0.010)
    assert StreamTiming(first_s=0.01, total_s=0.01, tokens=1).inter_token_s == 0.0


def serving_summary(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    bench = ServingBench(clients=None, models=None, work=None, sizes=ServingSizes())  # type: ignore[arg-type]
    bench.samples = samples
    bench.work = type("Work", (), {"translate": type("T", (), {"side": 32}),
                                   "text": type("X", (), {"max_new_tokens": 16})})  # fmt: skip
    return bench.summary()["calls"]


def test_each_hop_is_the_median_paired_difference_and_overhead_is_gateway_minus_model() -> None:
    calls = serving_summary(
        {
            "GenerateImages": {
                "in-process": [10.0, 10.0, 30.0],
                "triton": [12.0, 12.0, 90.0],
                "service": [15.0, 15.0, 15.0],
                "gateway": [17.0, 18.0, 17.0],
            },
            "ListModels": {"triton": [0.5], "service": [2.0], "gateway": [4.0]},
        }
    )
    images = calls["GenerateImages"]
    assert images["p50_ms"]["triton"] == 12.0
    assert images["hops_ms"] == {"triton": 2.0, "service": 3.0, "gateway": 2.0}
    assert images["overhead_ms"] == 7.0
    assert images["overhead_percent"] == pytest.approx(70.0)
    assert images["triton_vs_in_process"] == pytest.approx(1.2)
    # A call that never reaches a model has no in-process side and no overhead share.
    assert calls["ListModels"]["hops_ms"] == {"service": 1.5, "gateway": 2.0}
    assert "overhead_ms" not in calls["ListModels"]


class FakeStatistics:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers

    async def get_inference_statistics(self, model: str, as_json: bool) -> dict[str, Any]:
        assert as_json
        return self.answers.pop(0)


def stats(*batches: tuple[int, int]) -> dict[str, Any]:
    """Triton's statistics as JSON: executions per batch size (int64 counts come as strings)."""
    rows = [{"batch_size": str(size), "compute_infer": {"count": str(n)}} for size, n in batches]
    return {"model_stats": [{"name": "biggan", "batch_stats": rows}]}


def test_batch_counts_read_tritons_executions_per_batch_size() -> None:
    fake = FakeStatistics([stats((1, 3), (16, 2)), {"model_stats": [{"name": "biggan"}]}])
    assert asyncio.run(batching.batch_counts(fake, "biggan")) == Counter({1: 3, 16: 2})  # type: ignore[arg-type]
    assert asyncio.run(batching.batch_counts(fake, "biggan")) == Counter()  # type: ignore[arg-type]


def test_batching_summary_gives_rates_gains_and_the_mean_batch() -> None:
    bench = batching.BatchingBench.__new__(batching.BatchingBench)
    bench.sizes = batching.BatchingSizes(levels=(1, 16))
    bench.work = type("Work", (), {"translate": type("T", (), {"triton_model": "cyclegan_x"})})
    one = batching.LevelFigures(calls=10, seconds=2.0, latencies_ms=[5.0], batches=Counter({1: 10}))
    many = batching.LevelFigures(
        calls=40, seconds=2.0, latencies_ms=[20.0], batches=Counter({16: 2, 8: 1})
    )
    bench.figures = {rpc: {1: one, 16: many} for rpc in batching.RPCS}
    levels = bench.summary()["rpcs"]["GenerateImages"]["levels"]
    assert levels["1"]["images_per_s"] == 5.0
    assert levels["16"]["vs_concurrency_1"] == 4.0
    assert levels["16"]["executions"] == 3
    assert levels["16"]["mean_batch"] == pytest.approx(40 / 3)
    assert levels["16"]["batch_sizes"] == {"8": 1, "16": 2}


def stream_levels(gain: float, slowdown: float) -> dict[str, Any]:
    """Concurrent-stream results with one and 16 streams on every side."""
    idle = {"tokens_per_s": 100.0, "first_token_p50_ms": 10.0}
    loaded = {"tokens_per_s": 100.0 * gain, "first_token_p50_ms": 10.0 * slowdown}
    levels = {side: {"1": dict(idle), "16": dict(loaded)} for side in streams.STREAM_SIDES}
    return streams.summarise(levels, streams.StreamSizes())


def demo_results(
    overhead_ms: float, gain: float, peak_mb: float, stream_gain: float = 5.0,
    first_token_slowdown: float = 2.0, hop_ratio: float = 1.2, per_token_ms: float = 0.2,
    inter_token: float = 1.2,
) -> dict[str, Any]:  # fmt: skip
    vs_floor = {"triton": hop_ratio / 2, "service": hop_ratio, "gateway": hop_ratio / 2}
    calls: dict[str, Any] = {
        c: {"overhead_ms": overhead_ms / 2, "vs_floor": dict(vs_floor)}
        for c in ("GenerateImages", "TranslateImage")
    }
    calls["TranslateImage"]["overhead_ms"] = overhead_ms
    calls["TranslateImage"]["vs_floor"]["gateway"] = hop_ratio
    calls["GenerateText"] = {"overhead_ms": per_token_ms * 64, "vs_floor": dict(vs_floor)}
    calls["GenerateText"]["vs_floor"]["triton"] = hop_ratio
    calls["ListModels"] = {"vs_floor": {"service": hop_ratio / 2, "gateway": hop_ratio / 3}}
    return {
        "serving": {"calls": calls, "text_tokens": 64},
        "batching": {"rpcs": {"GenerateImages": {"levels": {"16": {"vs_concurrency_1": gain}}}}},
        "memory": {"services": {"gateway": {"peak_mb": 50.0}, "text": {"peak_mb": peak_mb}}},
        "streams": stream_levels(stream_gain, first_token_slowdown),
        "text": {
            "inter_token_vs_in_process": {"gateway": inter_token},
            "inter_token_p50_ms": {"gateway": 1.5},
        },
    }


def test_verdicts_judge_the_worst_figure_against_each_target() -> None:
    # The full-size target reads the median of the runs, not the last run's figure.
    runs = [
        {
            "calls": {
                "GenerateImages": {"overhead_percent": g},
                "TranslateImage": {"overhead_percent": t},
            }
        }
        for g, t in ((4.0, 9.4), (3.0, 6.0), (4.5, 5.3))
    ]
    full = {"serving": {"overhead_percent_runs": overhead_runs(runs)}}
    assert full["serving"]["overhead_percent_runs"]["TranslateImage"]["median"] == 6.0
    rows = verdicts(demo_results(4.9, 1.5, 149.0, 6.0, 2.99, 1.5, 0.25, 1.3), full)
    assert [row["met"] for row in rows] == [True, False, True, True] + [True] * 7
    assert "TranslateImage" in rows[0]["figure"]
    assert rows[1]["figure"] == "6.00% (TranslateImage, the largest; runs: 9.40, 6.00, 5.30%)"
    assert "text" in rows[3]["figure"]
    # Each hop's worst call is named: the gateway's on TranslateImage, Triton's on text.
    assert "1.50x (TranslateImage" in rows[4]["figure"]
    assert rows[5]["figure"].startswith("1.50x (")  # every model call ties on the service hop
    assert "1.50x (GenerateText" in rows[6]["figure"]
    assert rows[7]["figure"].startswith("0.250 ms (16.00 ms over 64 tokens)")
    assert rows[8]["figure"].startswith("1.30x")
    assert rows[9]["figure"].startswith("6.00x (600 tokens/s)")
    assert rows[10]["figure"].startswith("2.99x (29.9 ms p50; triton 2.99x, service 2.99x)")
    rows = verdicts(demo_results(5.0, 1.49, 150.0, 5.99, 3.0, 1.51, 0.26, 1.31), None)
    assert [row["met"] for row in rows] == [False] * 10


def test_stream_summary_compares_every_level_with_one_stream() -> None:
    levels = {
        side: {
            "1": {"tokens_per_s": 50.0, "first_token_p50_ms": 8.0},
            "4": {"tokens_per_s": 150.0, "first_token_p50_ms": 12.0},
        }
        for side in streams.STREAM_SIDES
    }
    summary = streams.summarise(levels, streams.StreamSizes(levels=(1, 4)))
    four = summary["levels"]["gateway"]["4"]
    assert four["tokens_per_s_vs_1"] == 3.0 and four["first_token_vs_idle"] == 1.5
    assert summary["levels"]["triton"]["1"]["tokens_per_s_vs_1"] == 1.0


def test_a_level_run_adds_tokens_over_the_wall_time() -> None:
    run = streams.LevelRun(
        wall_s=2.0,
        timings=[StreamTiming(0.01, 1.0, 64), StreamTiming(0.03, 1.5, 36)],
    )
    figures = run.figures()
    assert figures["tokens"] == 100 and figures["tokens_per_s"] == 50.0
    assert figures["first_token_p50_ms"] == pytest.approx(20.0)


def test_biggan_deep_layouts_up_sample_once_per_doubling_from_4x4() -> None:
    assert biggan_config(128, 128).layers == BigGANConfig().layers  # the package's own 128 layout
    for resolution, layers in BIGGAN_DEEP_LAYERS.items():
        assert 4 * 2 ** sum(up for up, _, _ in layers) == resolution
        # Each block's input channels are the previous block's output channels.
        assert all(a[2] == b[1] for a, b in itertools.pairwise(layers))
    with pytest.raises(ValueError, match="not 64"):
        biggan_config(64, 128)


def test_full_size_set_is_written_once_in_the_published_formats(tmp_path: Path) -> None:
    spec = FullSizeSet(biggan_channel_width=4, cyclegan_ngf=8)
    write_full_size(tmp_path, spec, progress=False)
    config = json.loads((tmp_path / "biggan" / "config.json").read_text())
    assert (config["output_dim"], config["channel_width"], config["num_classes"]) == (128, 4, 1000)
    assert (tmp_path / "cyclegan" / "horse2zebra" / "latest_net_G.pth").is_file()
    assert (tmp_path / "gpt2" / "tokenizer.json").is_file()
    work = Workloads.for_weights(tmp_path)
    assert work.translate.side == 256 and work.translate.pixels.shape == (1, 256, 256, 3)
    assert work.images.num_classes == 1000
    marker = tmp_path / "biggan" / "untouched"
    marker.write_text("")
    write_full_size(tmp_path, spec, progress=False)
    assert marker.exists(), "the same set must not be written again"
    write_full_size(tmp_path, FullSizeSet(biggan_channel_width=8, cyclegan_ngf=8), progress=False)
    assert not marker.exists(), "another set replaces the old one"


def test_gradient_image_is_a_png_of_the_pixels_it_returns() -> None:
    png, pixels = gradient_image(32)
    assert png.startswith(b"\x89PNG") and pixels.shape == (1, 32, 32, 3)
    assert pixels[0, 0, 0, 0] < pixels[0, -1, 0, 0]


def test_signing_bench_measures_every_format_side_by_side(tmp_path: Path) -> None:
    from bench import signing

    results = signing.measure(calls=2)
    assert set(results["formats"]) == {"PNG", "JPEG", "WebP"}
    for row in results["formats"].values():
        assert row["signed_p50_ms"] > 0 and row["unsigned_p50_ms"] > 0
        assert row["ratio"] == row["signed_p50_ms"] / row["unsigned_p50_ms"]
        assert 1000 < row["bytes_added"] < 20_000  # a manifest, not a thumbnail
    assert isinstance(results["verdict"]["met"], bool)
    assert "JPEG" in signing.report(results)
    signing.plot(results, tmp_path / "signing.png")
    assert (tmp_path / "signing.png").read_bytes().startswith(b"\x89PNG")


def test_text_watermark_bench_scores_generated_and_held_out_text(tmp_path: Path) -> None:
    from bench import watermark_text
    from bench.common import DEMO_WEIGHTS

    results = watermark_text.measure(DEMO_WEIGHTS, samples=2, progress=False)
    assert results["windows"] == 2
    assert [(r["text"], r["tokens"]) for r in results["rows"]] == [
        ("watermarked", 50), ("watermarked", 200), ("human", 50), ("human", 200),
    ]  # fmt: skip
    marked, human = results["z"]["watermarked"]["200"], results["z"]["human"]["200"]
    assert len(marked) == len(human) == 2
    assert min(marked) > max(human)  # 200 tokens separate them by far
    assert "detection rate" in watermark_text.report(results)
    watermark_text.plot(results, tmp_path / "w.png")
    assert (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")


def test_image_watermark_bench_scores_every_edit_on_every_set(tmp_path: Path) -> None:
    from bench import watermark_image

    results = watermark_image.measure(per_size=2, progress=False)
    threshold = results["threshold"]
    assert set(results["sets"]) == {"photos 128px", "photos 256px", "photos 384px", "digits 128px"}
    for name, figures in results["sets"].items():
        assert list(figures["edits"]) == list(watermark_image.EDITS)
        assert figures["psnr_db"] > 30
        for edit, row in figures["edits"].items():
            # These images keep the mark through every edit, and no clean one shows it.
            assert row["marked_min"] >= threshold > row["clean_max"], (name, edit)
            assert (row["detection_rate"], row["false_positive_rate"]) == (1.0, 0.0), (name, edit)
        # Each edit is applied before scoring: every one moves the score of the marked images.
        unedited = figures["edits"]["none"]["marked_min"]
        moved = [row["marked_min"] != unedited for row in figures["edits"].values()]
        assert moved == [edit != "none" for edit in figures["edits"]], name
    assert "PSNR" in watermark_image.report(results)
    watermark_image.plot(results, tmp_path / "w.png")
    assert (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")


def test_watermark_comparison_judges_every_method_on_the_same_images(tmp_path: Path) -> None:
    from bench import watermark_compare

    results = watermark_compare.measure(per_size=1, progress=False)
    assert list(results["methods"]) == ["genmedia", "dwtDct", "dwtDctSvd", "rivaGan"]
    for name, figures in results["methods"].items():
        sets = figures["sets"]
        assert set(sets) == {"photos 128px", "photos 256px", "photos 384px", "digits 128px"}
        # Unedited, every method finds its own mark where it marks at all.
        assert sets["photos 256px"]["edits"]["none"]["detection_rate"] == 1.0, name
        assert sets["photos 256px"]["psnr_db"] > 30, name
        small = sets["digits 128px"]
        if name == "genmedia":
            assert small["marked_share"] == 1.0
        else:  # the package refuses images under 256 x 256 pixels
            assert small["marked_share"] == 0 and small["psnr_db"] is None
            assert small["edits"]["none"]["detection_rate"] == 0
    assert "refused" in watermark_compare.report(results)
    watermark_compare.plot(results, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")


def test_package_verifier_gets_small_images_scaled_up_by_a_whole_factor() -> None:
    from bench.watermark_compare import PACKAGE_MIN_PIXELS, _scaled_up_for_package

    halved = _scaled_up_for_package(np.zeros((192, 192, 3), np.uint8))
    assert halved.shape == (384, 384, 3)
    big_enough = np.zeros((256, 256, 3), np.uint8)
    assert _scaled_up_for_package(big_enough) is big_enough
    cropped = _scaled_up_for_package(np.zeros((103, 103, 3), np.uint8))
    assert cropped.shape[0] * cropped.shape[1] >= PACKAGE_MIN_PIXELS


def test_a_figure_bench_run_writes_its_json_and_png_where_asked(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "bench.signing", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "JPEG" in run.stdout  # the report is printed
    results = json.loads((tmp_path / "signing.json").read_text())
    assert results["machine"]["cpus"] and set(results["formats"]) == {"PNG", "JPEG", "WebP"}
    assert (tmp_path / "signing.png").read_bytes().startswith(b"\x89PNG")


def test_the_verification_cost_bench_measures_the_window_against_the_whole_image(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "bench.verify_cost", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "verify-cost.json").read_text())
    assert {row["format"] for row in results["rows"]} == {"PNG", "JPEG", "WEBP"}
    for row in results["rows"]:
        # Both find the mark; at 1000 px the window is the whole image at scale 1, so the
        # scores agree, and the bounded check holds less memory than the whole-image one.
        assert row["bounded"]["score"] >= 0.4 and row["whole"]["score"] >= 0.4
        assert abs(row["bounded"]["score"] - row["whole"]["score"]) < 0.05
        assert row["bounded"]["mb"] < row["whole"]["mb"]
    assert results["verdict"]["met"] is True
    assert (tmp_path / "verify-cost.png").read_bytes().startswith(b"\x89PNG")
