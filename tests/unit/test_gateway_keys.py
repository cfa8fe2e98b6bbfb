import hashlib
import json
import os
import re
from pathlib import Path

import grpc
import pytest

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.registry import BACKENDS, TEXT_GENERATION
from services.gateway.auth import ApiKeys, Authenticator
from services.gateway.keys import (
    KEY_PREFIX,
    UNLIMITED,
    DailyBudget,
    KeyEntry,
    KeyFileError,
    KeyPolicy,
    hash_key,
    load_keys,
    main,
    new_key,
)

ALICE_KEY = "gm_alice-test-key"
BOB_KEY = "gm_bob-test-key"
ALL_GRPC_SERVICES = frozenset(s for b in BACKENDS for s in b.grpc_services)
TEXT = "genmedia.v1.TextGenerationService"
IMAGES = "genmedia.v1.ImageGenerationService"


def write_keys(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def entry(name: str, key: str, **limits: object) -> dict[str, object]:
    return {"name": name, "sha256": hash_key(key), **limits}


def bearer(value: str) -> list[tuple[str, str]]:
    return [("x-request-id", "r1"), ("authorization", value)]


def bump_mtime(path: Path) -> None:
    """Forces a different mtime than the one ApiKeys saw, however coarse the file system."""
    stamp = path.stat().st_mtime + 10
    os.utime(path, (stamp, stamp))


# -- load_keys ---------------------------------------------------------------


def test_key_limits_are_merged_over_the_defaults(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "keys.json",
        {
            "defaults": {"rate_per_s": 5, "burst": 10, "max_concurrent": 4},
            "keys": [
                entry("alice", ALICE_KEY),
                entry("bob", BOB_KEY, rate_per_s=50, max_concurrent=2),
            ],
        },
    )
    policies = load_keys(path)
    assert set(policies) == {hash_key(ALICE_KEY), hash_key(BOB_KEY)}
    alice, bob = policies[hash_key(ALICE_KEY)], policies[hash_key(BOB_KEY)]
    assert (alice.name, alice.rate_per_s, alice.burst, alice.max_concurrent) == ("alice", 5, 10, 4)
    # bob sets his own rate and concurrency and inherits the burst.
    assert (bob.name, bob.rate_per_s, bob.burst, bob.max_concurrent) == ("bob", 50, 10, 2)
    assert alice.daily == bob.daily == UNLIMITED
    assert alice.daily_limit() is None


def test_a_key_daily_budget_inherits_the_units_it_does_not_set(tmp_path: Path) -> None:
    # keys.py: "A key inherits every limit it does not set from ``defaults``".
    path = write_keys(
        tmp_path / "keys.json",
        {
            "defaults": {"daily": {"images": 1000, "megapixels": 50, "tokens": 200000}},
            "keys": [entry("batch-job", ALICE_KEY, daily={"images": 100000})],
        },
    )
    policy = load_keys(path)[hash_key(ALICE_KEY)]
    assert policy.daily.images == 100000
    assert policy.daily.megapixels == 50
    assert policy.daily.tokens == 200000


@pytest.mark.parametrize(
    ("rate", "burst", "expected_burst"),
    [(None, None, 1), (2.5, None, 3), (0.2, None, 1), (50, None, 50), (2.5, 7, 7)],
)
def test_burst_defaults_to_one_second_of_rate(
    tmp_path: Path, rate: float | None, burst: int | None, expected_burst: int
) -> None:
    limits = {k: v for k, v in {"rate_per_s": rate, "burst": burst}.items() if v is not None}
    path = write_keys(tmp_path / "keys.json", {"keys": [entry("alice", ALICE_KEY, **limits)]})
    policy = load_keys(path)[hash_key(ALICE_KEY)]
    assert policy.rate_per_s == rate
    assert policy.burst == expected_burst


def test_services_map_to_grpc_service_names(tmp_path: Path) -> None:
    path = write_keys(
        tmp_path / "keys.json",
        {
            "defaults": {"services": ["image-generation"]},
            "keys": [
                entry("text", ALICE_KEY, services=["text-generation"]),
                entry("everything", BOB_KEY, services=["*"]),
                entry(
                    "inherits",
                    "gm_carol",
                ),
                entry("two", "gm_dave", services=["image-translation", "text-generation"]),
            ],
        },
    )
    policies = load_keys(path)
    assert policies[hash_key(ALICE_KEY)].services == frozenset(TEXT_GENERATION.grpc_services)
    assert policies[hash_key(BOB_KEY)].services == ALL_GRPC_SERVICES
    assert len(ALL_GRPC_SERVICES) == 3
    assert policies[hash_key("gm_carol")].services == {IMAGES}
    assert policies[hash_key("gm_dave")].services == {
        "genmedia.v1.ImageTranslationService",
        TEXT,
    }


def test_services_unset_everywhere_means_all(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.json", {"keys": [entry("alice", ALICE_KEY)]})
    assert load_keys(path)[hash_key(ALICE_KEY)].services == ALL_GRPC_SERVICES


def test_an_empty_services_list_is_refused_not_read_as_every_service(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.json", {"keys": [entry("alice", ALICE_KEY, services=[])]})
    with pytest.raises(KeyFileError, match=r"keys\.0\.services.*services is empty"):
        load_keys(path)


@pytest.mark.parametrize(
    ("keys_file", "problem"),
    [
        (
            {"keys": [entry("alice", ALICE_KEY, services=["video-generation"])]},
            r"keys\.0\.services.*unknown service 'video-generation'",
        ),
        (
            {"defaults": {"services": ["imagegen"]}, "keys": []},
            r"defaults\.services.*unknown service 'imagegen'",
        ),
        ({"keys": [{"name": "alice", "sha256": "abc123"}]}, r"keys\.0\.sha256"),
        ({"keys": [{"name": "alice", "sha256": hash_key(ALICE_KEY).upper()}]}, r"keys\.0\.sha256"),
        ({"keys": [entry("alice", ALICE_KEY, colour="red")]}, r"keys\.0\.colour"),
        ({"keys": [], "owner": "ops"}, r"owner"),
        ({"keys": [entry("alice", ALICE_KEY, daily={"videos": 3})]}, r"keys\.0\.daily\.videos"),
        ({"keys": [entry("alice", ALICE_KEY, rate_per_s=0)]}, r"keys\.0\.rate_per_s"),
        ({"keys": [entry("alice", ALICE_KEY), entry("alice", BOB_KEY)]}, r"names must be unique"),
        ("{not json", r"invalid API keys file"),
    ],
)
def test_invalid_keys_files_are_refused_naming_the_problem(
    tmp_path: Path, keys_file: object, problem: str
) -> None:
    path = write_keys(tmp_path / "keys.json", keys_file)
    with pytest.raises(KeyFileError, match=problem) as error:
        load_keys(path)
    assert str(path) in str(error.value)


def test_unreadable_keys_file_is_a_key_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(KeyFileError, match=r"cannot read API keys file .*nope\.json"):
        load_keys(missing)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_keys(tmp_path)  # a directory


# -- hash_key / new_key ------------------------------------------------------


def test_new_keys_are_prefixed_random_and_long() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(key) - len(KEY_PREFIX) >= 43  # 32 random bytes, base64url
        assert re.fullmatch(r"gm_[A-Za-z0-9_-]+", key)


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("gm_abc") == hashlib.sha256(b"gm_abc").hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(new_key()))
    assert hash_key("gm_abc") != hash_key("gm_abd")


# -- ApiKeys / Authenticator -------------------------------------------------


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.json",
        {
            "keys": [
                entry("alice", ALICE_KEY, services=["text-generation"]),
                entry("bob", BOB_KEY),
            ]
        },
    )


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("x-request-id", "r1")],
        bearer("Basic x"),
        bearer("Bearer "),
        bearer("Bearer"),
        bearer("   "),
        bearer(ALICE_KEY),  # no scheme
    ],
)
def test_calls_without_a_bearer_key_are_unauthenticated(
    keys_path: Path, metadata: list[tuple[str, str]] | None
) -> None:
    with pytest.raises(Unauthenticated) as error:
        ApiKeys(keys_path).authenticate(metadata)
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in error.value.message


def test_an_unknown_key_is_unauthenticated(keys_path: Path) -> None:
    with pytest.raises(Unauthenticated, match="not recognised") as error:
        ApiKeys(keys_path).authenticate(bearer("Bearer gm_not-a-key"))
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_known_key_gets_its_policy(keys_path: Path, scheme: str) -> None:
    keys = ApiKeys(keys_path)
    policy = keys.authenticate(bearer(f"{scheme} {ALICE_KEY}"))
    assert policy.name == "alice"
    assert policy.services == {TEXT}
    assert keys.authenticate(bearer(f"  {scheme}   {BOB_KEY}  ")).name == "bob"


def test_authorize_refuses_services_the_key_lacks(keys_path: Path) -> None:
    alice = ApiKeys(keys_path).authenticate(bearer(f"Bearer {ALICE_KEY}"))
    Authenticator.authorize(alice, TEXT)  # allowed: no exception
    with pytest.raises(PermissionDenied) as error:
        Authenticator.authorize(alice, IMAGES)
    assert error.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "'alice'" in error.value.message and "ImageGenerationService" in error.value.message


def test_open_mode_policy_may_call_anything() -> None:
    for service in ALL_GRPC_SERVICES:
        Authenticator.authorize(None, service)
    policy = KeyPolicy(name="none", services=frozenset(), daily=DailyBudget())
    with pytest.raises(PermissionDenied):
        Authenticator.authorize(policy, TEXT)


def test_a_rewritten_keys_file_is_picked_up(keys_path: Path) -> None:
    keys = ApiKeys(keys_path)
    assert not keys.reload_if_changed()  # unchanged
    carol = "gm_carol-test-key"
    write_keys(keys_path, {"keys": [entry("carol", carol)]})
    bump_mtime(keys_path)
    assert keys.reload_if_changed()
    assert keys.authenticate(bearer(f"Bearer {carol}")).name == "carol"
    with pytest.raises(Unauthenticated):
        keys.authenticate(bearer(f"Bearer {ALICE_KEY}"))  # rotated out
    assert not keys.reload_if_changed()  # nothing new since


def test_an_invalid_new_keys_file_keeps_the_old_keys(keys_path: Path) -> None:
    keys = ApiKeys(keys_path)
    write_keys(keys_path, {"keys": [{"name": "carol", "sha256": "not-a-hash"}]})
    bump_mtime(keys_path)
    assert not keys.reload_if_changed()
    assert keys.authenticate(bearer(f"Bearer {ALICE_KEY}")).name == "alice"
    keys_path.unlink()  # a vanished file keeps the old keys too
    assert not keys.reload_if_changed()
    assert keys.authenticate(bearer(f"Bearer {BOB_KEY}")).name == "bob"


def test_api_keys_refuses_to_start_with_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        ApiKeys(tmp_path / "missing.json")


# -- python -m services.gateway.keys -----------------------------------------


def test_main_prints_a_key_and_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    main(["ci-bot", "--services", "text-generation"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    key = lines[0].rsplit(" ", 1)[-1]
    assert key.startswith(KEY_PREFIX) and "ci-bot" in lines[0]
    parsed = KeyEntry.model_validate_json(lines[2])
    assert parsed.name == "ci-bot"
    assert parsed.sha256 == hash_key(key)
    assert parsed.services == ["text-generation"]


def test_main_entry_works_in_a_keys_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["ci-bot"])
    lines = capsys.readouterr().out.splitlines()
    key = lines[0].rsplit(" ", 1)[-1]
    path = write_keys(tmp_path / "keys.json", f'{{"keys": [{lines[2]}]}}')
    policy = ApiKeys(path).authenticate(bearer(f"Bearer {key}"))
    assert policy.name == "ci-bot"
    assert policy.services == ALL_GRPC_SERVICES


def test_main_refuses_an_unknown_service(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["ci-bot", "--services", "video-generation"])
    assert exit_.value.code == 2
    assert "video-generation" in capsys.readouterr().err


def test_a_same_size_rewrite_within_one_timestamp_is_still_reloaded(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.json", {"keys": [entry("alice", ALICE_KEY)]})
    keys = ApiKeys(path)
    stat = path.stat()
    other = "gm_" + "b" * (len(ALICE_KEY) - 3)  # a revoked key swapped for one of equal length
    write_keys(path, {"keys": [entry("alice", other)]})
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert keys.reload_if_changed()
    with pytest.raises(Unauthenticated):
        keys.authenticate((("authorization", f"Bearer {ALICE_KEY}"),))
