"""The trimmed Triton server the GPU run carries (bench/gpu/stage.py): only what the server,
the python backend and the Python 3.12 stub load, and all of that."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from bench.gpu.__main__ import gpu_utilization, targets
from bench.gpu.stage import GPU_PYTHON, grouped, into_parts, missing_libraries, trimmed_server


def test_the_trimmed_server_has_every_library_it_loads_and_runs(tmp_path: Path) -> None:
    bundle = trimmed_server(tmp_path / "triton")
    assert missing_libraries(bundle) == {}
    server = bundle / "pytriton" / "tritonserver"
    stubs = [path.name for path in (server / "python_backend_stubs").iterdir()]
    assert stubs == [GPU_PYTHON]
    assert (server / "python_backend_stubs" / GPU_PYTHON / "triton_python_backend_stub").exists()
    assert not list((bundle / "nvidia_pytriton.libs").glob("libpython3*"))
    size = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
    assert size < 110 * 2**20  # the whole wheel unpacks to about 150 MB
    usage = subprocess.run(
        [str(server / "bin" / "tritonserver"), "--help"], capture_output=True, text=True, timeout=30
    )
    assert "--model-repository" in usage.stderr  # it loaded and parsed (--help exits 1)


def test_a_library_missing_from_the_bundle_is_named(tmp_path: Path) -> None:
    bundle = trimmed_server(tmp_path / "triton")
    (library,) = (bundle / "nvidia_pytriton.libs").glob("libtritonserver-*")
    library.unlink()
    missing = missing_libraries(bundle)
    assert library.name in missing["tritonserver"]


def test_each_ratio_is_judged_against_its_target() -> None:
    judged = targets(
        {
            "GenerateImages (images/s)": (90.0, 100.0),
            "TranslateImage (images/s)": (89.0, 100.0),
            "StreamText (tokens/s)": (80.0, 100.0),
        }
    )
    assert judged["GenerateImages (images/s)"]["met"] is True  # 0.9 >= 0.9
    assert judged["TranslateImage (images/s)"]["met"] is False
    assert judged["StreamText (tokens/s)"] == {"ratio": 0.8, "target": 0.8, "met": True}


def test_gpu_utilisation_is_the_mean_of_tritons_gauges(tmp_path: Path) -> None:
    page = tmp_path / "metrics"
    page.write_text(
        'nv_gpu_utilization{gpu_uuid="a"} 0.5\nnv_gpu_utilization{gpu_uuid="b"} 0.7\n'
        "nv_inference_count 3\n"
    )
    assert gpu_utilization(page.as_uri()) == pytest.approx(0.6)
    page.write_text("nv_inference_count 3\n")
    assert gpu_utilization(page.as_uri()) is None


def test_wheels_sharing_a_package_stay_in_one_part_and_parts_fit(tmp_path: Path) -> None:
    def wheel(name: str, top: str, size: int) -> Path:
        path = tmp_path / f"{name}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"{top}/__init__.py", "x" * size)
            archive.writestr(f"{name}-1.0.dist-info/METADATA", "")
        return path

    api = wheel("opentelemetry_api", "opentelemetry", 10)
    sdk = wheel("opentelemetry_sdk", "opentelemetry", 10)
    big = wheel("scipy", "scipy", 10)
    groups = grouped([api, big, sdk])
    assert sorted(sorted(p.name for p in group) for group in groups) == [
        [api.name, sdk.name], [big.name],
    ]  # fmt: skip
    capacity = max(path.stat().st_size for path in (api, sdk, big)) * 2 + 10
    parts = into_parts(groups, capacity)
    assert all(sum(p.stat().st_size for p in part) <= capacity for part in parts)
    assert any({api, sdk} <= set(part) for part in parts)
