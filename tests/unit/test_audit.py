"""The audit trail is written off the event loop: one JSON line per event, in order, deferred
hashes computed by the writer, everything written by shutdown."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from services.common import audit
from services.common.audit import AuditLog, deferred_sha256


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_events_are_written_one_line_each_in_the_order_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), "text-generation")
    for index in range(200):
        log.record(f"req-{index}", "gpt2", "1", parameters={"index": index})
    assert log.flush()
    events = lines(path)
    assert [e["request_id"] for e in events] == [f"req-{i}" for i in range(200)]
    assert {e["service"] for e in events} == {"text-generation"}
    log.close()


def test_a_deferred_hash_is_computed_by_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed_on: list[str] = []
    real = audit.sha256

    def recording(data: bytes | str) -> str:
        hashed_on.append(threading.current_thread().name)
        return real(data)

    monkeypatch.setattr(audit, "sha256", recording)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), "image-translation")
    data = bytes(range(256)) * 4096  # 1 MiB
    log.record(
        "req", "cyclegan_horse2zebra", "1", parameters={"input_sha256": deferred_sha256(data)}
    )
    log.close()

    (event,) = lines(path)
    assert event["parameters"]["input_sha256"] == hashlib.sha256(data).hexdigest()
    assert hashed_on == ["audit-writer"]


def test_close_all_writes_what_was_recorded_and_later_events_still_land(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), "image-generation")
    log.record("before", "biggan", "1")
    audit.close_all()  # what the server does at shutdown
    assert [e["request_id"] for e in lines(path)] == ["before"]
    log.record("after", "biggan", "1")  # written inline: no writer is left
    assert [e["request_id"] for e in lines(path)] == ["before", "after"]
