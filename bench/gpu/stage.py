"""Prepares, on this machine, what a lent GPU machine lacks, in parts that each fit a call.

    python -m bench.gpu.stage                      (make gpu-stage: Python 3.12, the GPU's)
    python -m bench.gpu.stage --python 3.11 --machine --fast --out DIR    (the dry run's)

The GPU machine has Python 3.12, torch with CUDA, numpy 2 and some of our libraries
(requirements/gpu-machine.txt) but cannot reach a package index, and a call carries the
tree plus at most 64 MiB. So this writes ``var/gpu-stage/part-N/`` folders, each small
enough to travel with the tree, holding:

- the wheels of requirements/gpu-stage.txt and their dependencies, for that Python,
  less what the machine has (never a second torch or numpy); wheels that share a
  top-level package (``google``, ``opentelemetry``) stay in one part, since each part is
  installed on its own (bench/gpu/install.sh);
- ``triton.tar.xz``: the nvidia-pytriton server trimmed to what the server, its python
  backend and that Python's stub load (every library ldd names; not the other stubs nor
  libpython3.13), with an empty ``pytriton/__init__.py`` so the launcher finds the server
  as it finds the wheel (``importlib.util.find_spec``, no import).

``--machine`` also downloads the machine's own packages into ``machine/`` (torch as this
disk has it), for the dry run in `make test` that stands for the GPU machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from genmedia_shared.paths import REPO_ROOT

STAGE = REPO_ROOT / "var" / "gpu-stage"
GPU_PYTHON = "3.12"
REQUIREMENTS = REPO_ROOT / "requirements"
SERVER_PARTS = ("bin", "backends", "caches")
UNNEEDED_LIBRARIES = ("libpython3",)
"""Bundled libraries the server, the python backend and the stub do not load."""
TORCH = "torch==2.13.0"
TORCH_DEPENDENCIES = ("filelock", "typing-extensions", "setuptools", "sympy", "networkx",
                      "jinja2", "fsspec")  # fmt: skip
"""torch's own dependencies, without the CUDA ones its Linux wheels declare."""
MIB = 2**20
CALL_BYTES = 64 * MIB
MARGIN_BYTES = 4 * MIB
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64", "linux_x86_64")  # fmt: skip


# -- the server ------------------------------------------------------------------------------


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


def missing_libraries(bundle: Path) -> dict[str, list[str]]:
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


def pack(bundle: Path, archive: Path, preset: int = 6) -> Path:
    with tarfile.open(archive, "w:xz", preset=preset) as tar:
        for child in sorted(bundle.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


# -- the wheels ------------------------------------------------------------------------------


def download(python: str, dest: Path, requirements: list[str], deps: bool = True) -> None:
    """Binary wheels for ``python`` on x86-64 Linux, from this machine's package index."""
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
         "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
         *platforms, *([] if deps else ["--no-deps"]), *requirements],
        check=True,
    )  # fmt: skip


def dist_name(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def top_levels(wheel: Path) -> set[str]:
    """The top-level names a wheel installs (its .dist-info and .data aside)."""
    with zipfile.ZipFile(wheel) as archive:
        names = {name.split("/")[0] for name in archive.namelist()}
    return {name for name in names if not name.endswith((".dist-info", ".data"))}


def machine_names(python: str, scratch: Path) -> set[str]:
    """Every distribution the machine's own environment holds (its list and their
    dependencies, torch and what torch needs)."""
    download(python, scratch, ["-r", str(REQUIREMENTS / "gpu-machine.txt"), *TORCH_DEPENDENCIES])
    return {dist_name(wheel) for wheel in scratch.glob("*.whl")} | {"torch", "triton"}


def staged_wheels(python: str, dest: Path, machine: set[str]) -> list[Path]:
    download(python, dest, ["-r", str(REQUIREMENTS / "gpu-stage.txt")])
    download(python, dest, ["-r", str(REQUIREMENTS / "gpu-stage-no-deps.txt")], deps=False)
    kept = []
    for wheel in sorted(dest.glob("*.whl")):
        if dist_name(wheel) in machine or dist_name(wheel).startswith("nvidia-"):
            wheel.unlink()
        else:
            kept.append(wheel)
    return kept


def grouped(wheels: list[Path]) -> list[list[Path]]:
    """Wheels that share a top-level name, together (each part is installed on its own)."""
    groups: list[tuple[set[str], list[Path]]] = []
    for wheel in wheels:
        names = top_levels(wheel) - {"bin"}
        joined = [group for group in groups if group[0] & names]
        for group in joined:
            groups.remove(group)
            names |= group[0]
        groups.append((names, [wheel, *(w for group in joined for w in group[1])]))
    return [paths for _, paths in groups]


def into_parts(items: list[list[Path]], capacity: int) -> list[list[Path]]:
    """First fit, largest first: as few parts (calls) as the sizes allow."""
    sized = sorted(items, key=lambda paths: -sum(p.stat().st_size for p in paths))
    parts: list[tuple[int, list[Path]]] = []
    for paths in sized:
        size = sum(path.stat().st_size for path in paths)
        if size > capacity:
            raise SystemExit(f"{[p.name for p in paths]} alone are over a call's {capacity} B")
        for index, (used, held) in enumerate(parts):
            if used + size <= capacity:
                parts[index] = (used + size, [*held, *paths])
                break
        else:
            parts.append((size, list(paths)))
    return [held for _, held in parts]


def tree_bytes() -> int:
    """What the tree itself carries into every call (tracked files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return sum((REPO_ROOT / name.decode()).stat().st_size for name in listed if name)


def stage(out: Path, python: str, with_machine: bool, preset: int) -> list[Path]:
    """Writes ``out/part-N`` (and ``out/machine`` if asked); returns the parts."""
    if out.exists():
        shutil.rmtree(out)
    downloads, scratch = out / "downloads", out / "machine"
    downloads.mkdir(parents=True)
    machine = machine_names(python, scratch)
    if with_machine:
        download(python, scratch, [TORCH], deps=False)
    else:
        shutil.rmtree(scratch)
    wheels = staged_wheels(python, downloads, machine)
    bundle = trimmed_server(out / "triton", python)
    missing = missing_libraries(bundle)
    if missing:
        raise SystemExit(f"the trimmed server lacks libraries: {missing}")
    archive = pack(bundle, out / "triton.tar.xz", preset)
    shutil.rmtree(bundle)
    capacity = CALL_BYTES - tree_bytes() - MARGIN_BYTES
    parts = []
    for number, paths in enumerate(into_parts([[archive], *grouped(wheels)], capacity), 1):
        part = out / f"part-{number}"
        part.mkdir()
        for path in paths:
            shutil.move(path, part / path.name)
        parts.append(part)
    shutil.rmtree(downloads)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STAGE)
    parser.add_argument("--python", default=GPU_PYTHON, help="the GPU machine's: 3.12")
    parser.add_argument("--machine", action="store_true", help="also the machine's packages")
    parser.add_argument("--fast", action="store_true", help="light xz (the dry run)")
    args = parser.parse_args()
    parts = stage(args.out, args.python, args.machine, preset=0 if args.fast else 6)
    for part in parts:
        size = sum(path.stat().st_size for path in part.iterdir())
        print(f"{part.relative_to(args.out.parent)}: {size / MIB:.1f} MiB, "
              f"{len(list(part.iterdir()))} files")  # fmt: skip
    print(f"{len(parts)} calls, each carrying one part beside the tree: bench/gpu/README.md")


if __name__ == "__main__":
    main()
