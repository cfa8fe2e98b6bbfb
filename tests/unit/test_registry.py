"""The process registry is the one place a backend is named; the rest is derived from it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genmedia_shared.paths import REPO_ROOT
from services.common import api
from services.common.registry import ALL_PROCESSES, BACKENDS, GATEWAY
from services.common.settings import ENV_PREFIX
from services.gateway.estimates import metered, units
from services.gateway.settings import GatewaySettings


def test_the_registry_imports_nothing_heavy() -> None:
    """The launcher and the Triton image's repository builder read it without them."""
    code = (
        "import sys, services.common.registry; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'pydantic_settings', 'grpc', 'google', 'genmedia', 'numpy'}); "
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: p.name)
def test_every_process_names_its_settings_class_and_serves_what_its_protos_define(
    process,
) -> None:
    settings_class = process.settings_class()
    assert settings_class.__module__ == f"{process.package}.settings"
    assert settings_class.model_fields["grpc_port"].default == process.grpc_port
    for service_name in process.grpc_services:
        assert api.service(service_name).full_name == service_name


def test_the_gateway_reads_one_required_address_per_backend() -> None:
    required = {
        ENV_PREFIX + name.upper()
        for name, field in GatewaySettings.model_fields.items()
        if field.is_required()
    }
    assert required == {backend.addr_setting for backend in BACKENDS}
    # The names k8s/, deploy/ and docs/SETTINGS.md use.
    assert required == {
        "GENMEDIA_IMAGE_GENERATION_ADDR",
        "GENMEDIA_IMAGE_TRANSLATION_ADDR",
        "GENMEDIA_TEXT_GENERATION_ADDR",
    }


def test_metered_methods_and_units_are_the_api_methods_that_generate() -> None:
    assert {path: entry.units for path, entry in metered().items()} == {
        "/genmedia.v1.ImageGenerationService/GenerateImages": ("images",),
        "/genmedia.v1.ImageTranslationService/TranslateImage": ("megapixels",),
        "/genmedia.v1.ImageTranslationService/TranslateFrames": ("megapixels",),
        "/genmedia.v1.ImageTranslationService/TranslateVideo": ("megapixels",),
        "/genmedia.v1.TextGenerationService/GenerateText": ("tokens",),
        "/genmedia.v1.TextGenerationService/StreamText": ("tokens",),
    }
    assert units("/genmedia.v1.TextGenerationService/ListModels") == ()
    served = {
        api.path(method)
        for service_name in GATEWAY.grpc_services
        for method in api.service(service_name).methods
    }
    assert set(metered()) <= served
