"""What the services image installs (`pip install --no-deps .` in its build stage) is whole."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from services.common.registry import ALL_PROCESSES
from tests.deploy.manifests import REPO_ROOT


def test_the_wheel_holds_every_process_the_generated_code_and_the_entry_points(
    tmp_path: Path,
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("genmedia-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith("entry_points.txt")
        )
    for process in ALL_PROCESSES:
        assert process.package.replace(".", "/") + "/__main__.py" in names, process.name
    assert "services/__main__.py" in names
    assert "genmedia/v1/image_generation_pb2.py" in names
    assert "genmedia/v1/text_generation_pb2_grpc.py" in names
    assert "services/image_generation/data/imagenet.json" in names
    assert "genmedia-serve = services.__main__:main" in entry_points
    assert not any(n.startswith(("models/", "tests/")) for n in names)
