"""Labelled counters whose label sets are known at start read 0 before anything happens, so
a dashboard or a ratio shows 0 rather than "no data". Each check scrapes a fresh process:
other tests in this one have counted things already."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

from genmedia_shared.paths import REPO_ROOT
from services.common.registry import BACKENDS
from services.gateway.metrics import REFUSAL_REASONS


def fresh_scrape(setup: str) -> set[str]:
    """The sample lines of the default registry after ``setup`` runs in a new interpreter."""
    code = textwrap.dedent(setup) + (
        "\nfrom prometheus_client import REGISTRY, generate_latest"
        "\nprint(generate_latest(REGISTRY).decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return {line for line in result.stdout.splitlines() if not line.startswith("#")}


def test_gateway_retries_ejections_and_refusals_exist_at_zero() -> None:
    samples = fresh_scrape("import services.gateway.metrics")
    for backend in BACKENDS:
        for name in ("retries", "ejections"):
            line = f'genmedia_gateway_backend_{name}_total{{backend="{backend.name}"}} 0.0'
            assert line in samples
    for reason in REFUSAL_REASONS:
        assert f'genmedia_gateway_refused_total{{reason="{reason}"}} 0.0' in samples


def test_every_served_method_has_its_ok_and_server_fault_counts_at_zero() -> None:
    samples = fresh_scrape(
        """
        from genmedia.v1 import text_generation_pb2
        from services.common.metrics import create_server_series
        create_server_series(["genmedia.v1.TextGenerationService"], ("grpc", "http"))
        """
    )
    methods = (("StreamText", "server_stream"), ("GenerateText", "unary"))
    for (method, grpc_type), protocol in itertools.product(methods, ("grpc", "http")):
        labels = (
            f'grpc_method="{method}",grpc_service="genmedia.v1.TextGenerationService",'
            f'grpc_type="{grpc_type}",protocol="{protocol}"'
        )
        for code in ("OK", "INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS"):
            assert f'grpc_server_handled_total{{grpc_code="{code}",{labels}}} 0.0' in samples
        assert f"grpc_server_started_total{{{labels}}} 0.0" in samples


def test_text_generation_finish_reasons_exist_at_zero() -> None:
    samples = fresh_scrape(
        """
        from services.text_generation.generator import TextGenerator, TextModelInfo
        from services.text_generation.settings import TextGenerationSettings
        settings = TextGenerationSettings(
            triton_url="fake", tokenizer_dir=".", audit_log="/dev/null"
        )
        TextGenerator(settings, None, TextModelInfo(8, frozenset()), None)
        """
    )
    for reason in ("length", "stop", "eos", "cancelled", "error"):
        assert f'genmedia_text_finished_total{{model="gpt2",reason="{reason}"}} 0.0' in samples
    assert 'genmedia_tokens_generated_total{model="gpt2"} 0.0' in samples
