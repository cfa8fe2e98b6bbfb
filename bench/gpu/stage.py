"""Prepares, on this machine, what the GPU machine lacks, within what one call carries.

    python -m bench.gpu.stage            (bench/gpu/stage.sh)

The GPU machine has Python 3.12, torch with CUDA, numpy 2 and some of our libraries, but
no ``tritonserver``: the nvidia-pytriton wheel (150 MB unpacked) does not travel with the
tree (64 MiB a call). What the server really needs is kept (the binary, libtritonserver and
the libraries ldd names, the python backend, the Python 3.12 stub; not the other stubs nor
libpython3.13, which only the 3.13 stub loads) and packed with xz into
``var/gpu-stage/triton.tar.xz``, with an empty ``pytriton/__init__.py`` so the launcher finds
the server as it finds the wheel (``importlib.util.find_spec("pytriton")``, no import).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from genmedia_shared.paths import REPO_ROOT

STAGE = REPO_ROOT / "var" / "gpu-stage"
GPU_PYTHON = "3.12"
SERVER_PARTS = ("bin", "backends", "caches")
UNNEEDED_LIBRARIES = ("libpython3",)
"""Bundled libraries the server, the python backend and the 3.12 stub do not load."""


def wheel_root() -> Path:
    """site-packages holding this environment's nvidia-pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise SystemExit("nvidia-pytriton is not installed here: run `make venv`")
    return Path(spec.origin).parent.parent


def trimmed_server(out: Path, python: str = GPU_PYTHON) -> Path:
    """The server's parts for ``python`` under ``out`` (a site-packages-like folder)."""
    source = wheel_root()
    if out.exists():
        shutil.rmtree(out)
    server = out / "pytriton" / "tritonserver"
    for part in SERVER_PARTS:
        shutil.copytree(source / "pytriton" / "tritonserver" / part, server / part, symlinks=True)
    stub = source / "pytriton" / "tritonserver" / "python_backend_stubs" / python
    shutil.copytree(stub, server / "python_backend_stubs" / python, symlinks=True)
    (out / "pytriton" / "__init__.py").write_text('"""Only tritonserver/ is staged."""\n')
    libraries = out / "nvidia_pytriton.libs"
    libraries.mkdir()
    for library in (source / "nvidia_pytriton.libs").iterdir():
        if not library.name.startswith(UNNEEDED_LIBRARIES):
            shutil.copy2(library, libraries / library.name)
    for cached in out.rglob("__pycache__"):
        shutil.rmtree(cached)
    return out


def missing_libraries(bundle: Path, python: str = GPU_PYTHON) -> dict[str, list[str]]:
    """What ldd cannot find for each of the server's executables and backends in
    ``bundle`` (empty: everything they load is there, or on any Linux)."""
    server = bundle / "pytriton" / "tritonserver"
    loaded = [
        server / "bin" / "tritonserver",
        server / "backends" / "python" / "libtriton_python.so",
        *server.joinpath("caches").rglob("*.so"),
    ]
    env = os.environ | {"LD_LIBRARY_PATH": str(bundle / "nvidia_pytriton.libs")}
    missing = {}
    for path in loaded:
        listing = subprocess.run(["ldd", str(path)], env=env, capture_output=True, text=True)
        absent = [line.split()[0] for line in listing.stdout.splitlines() if "not found" in line]
        if absent:
            missing[path.name] = absent
    return missing


def pack(bundle: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        for child in sorted(bundle.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STAGE)
    args = parser.parse_args()
    bundle = trimmed_server(args.out / "triton")
    missing = missing_libraries(bundle)
    if missing:
        raise SystemExit(f"the trimmed server lacks libraries: {missing}")
    archive = pack(bundle, args.out / "triton.tar.xz")
    size = sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())
    print(f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB ({size / 2**20:.0f} MiB unpacked)")


if __name__ == "__main__":
    main()
