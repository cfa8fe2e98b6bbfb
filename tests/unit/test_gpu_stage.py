"""The trimmed Triton server the GPU run carries (bench/gpu/stage.py): only what the server,
the python backend and the Python 3.12 stub load, and all of that."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.gpu.stage import GPU_PYTHON, missing_libraries, trimmed_server


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
