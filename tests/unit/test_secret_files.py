"""Secret files are read once and again only when they change (key rotation)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.common.secrets import SecretFile
from services.common.settings import ImageWatermarkKeySettings


class CountingReads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.count = 0
        original = Path.read_text

        def read_text(this: Path, *args: object, **kwargs: object) -> str:
            if this == path:
                self.count += 1
            return original(this, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "read_text", read_text)


def test_a_secret_file_is_read_once_and_again_after_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("a" * 64 + "\n")
    reads = CountingReads(monkeypatch, key_file)
    now = [0.0]
    secret = SecretFile(key_file, recheck_s=5.0, clock=lambda: now[0])
    for _ in range(1000):
        assert secret.read() == "a" * 64
    assert reads.count == 1
    now[0] += 6  # past the re-check: the file is looked at, unchanged, not read
    assert secret.read() == "a" * 64 and reads.count == 1

    key_file.write_text("b" * 65 + "\n")  # rotated
    assert secret.read() == "a" * 64  # not looked at again yet
    now[0] += 6
    assert secret.read() == "b" * 65
    assert reads.count == 2


def test_a_rotation_that_replaces_the_file_is_seen_and_a_missing_file_keeps_the_key(
    tmp_path: Path,
) -> None:
    key_file, staged = tmp_path / "key", tmp_path / "staged"
    key_file.write_text("a" * 64)
    now = [0.0]
    secret = SecretFile(key_file, recheck_s=1.0, clock=lambda: now[0])
    assert secret.read() == "a" * 64
    staged.write_text("c" * 64)  # same size, a new file moved into place (a Secret's swap)
    os.replace(staged, key_file)
    now[0] += 2
    assert secret.read() == "c" * 64
    key_file.unlink()  # mid-rotation
    now[0] += 2
    assert secret.read() == "c" * 64


def test_the_image_services_read_their_watermark_key_file_once_for_many_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "image-watermark.key"
    key_file.write_text("f" * 64 + "\n")
    settings = ImageWatermarkKeySettings(image_watermark_key_file=key_file)
    reads = CountingReads(monkeypatch, key_file)
    assert all(settings.image_watermark() == "f" * 64 for _ in range(500))
    assert reads.count <= 1  # the start-up check may have read it already
