"""`genmedia models fetch` and `models list` against a real HTTP server on 127.0.0.1.

The server serves tiny checkpoints in exactly the published formats at the
published paths (a mirror: `--mirror` swaps only scheme://host), and can be
told to cut a response short once, to ignore Range, to answer like the Hugging
Face Hub (a redirect carrying X-Linked-ETag / X-Linked-Size) or to send a
wrong digest. The test process uses torch to write and load checkpoints; the
client code under test never imports it.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

import pytest
import torch
from pytorch_pretrained_biggan import BigGAN, BigGANConfig
from pytorch_pretrained_biggan import model as biggan_package
from tokenizers import Tokenizer

from genmedia_models.biggan import load_biggan
from genmedia_models.cyclegan import load_generator
from genmedia_models.gpt2.loading import load_gpt2
from services.client import fetch, published
from services.client.cli import main
from tests.certs import Pki, make_pki
from tools.test_weights import write_cyclegan, write_gpt2

REPOSITORY = Path(__file__).resolve().parents[2]
# As listed by the authors' scripts/download_cyclegan_model.sh, in its order.
CYCLEGAN_SCRIPT_NAMES = [
    "apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite",
    "horse2zebra", "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe",
    "style_vangogh", "sat2map", "map2sat", "cityscapes_photo2label", "cityscapes_label2photo",
    "facades_photo2label", "facades_label2photo", "iphone2dslr_flower",
]  # fmt: skip
H2Z_PATH = "/cyclegan/pretrained_models/horse2zebra.pth"
PUBLISHED_PINS = dict(published.PINNED_SHA256)  # before the tests swap them out
GPT2_RESOLVE = f"/openai-community/gpt2/resolve/{published.GPT2_REVISION}"
GPT2_WEIGHTS_PATH = f"{GPT2_RESOLVE}/model.safetensors"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the server -------------------------------------------------------------------------


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    cut_once: set[str] = field(default_factory=set)  # send half the body, then hang up
    ignore_range: bool = False
    etags: dict[str, str] = field(default_factory=dict)  # path -> ETag header
    # path -> (X-Linked-ETag, X-Linked-Size) of a Hub-like redirect to /cdn<path>
    hub_redirects: dict[str, tuple[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_for(self, path: str) -> list[str | None]:
        with self.lock:
            return [range_ for requested, range_ in self.requests if requested == path]


class MirrorHandler(BaseHTTPRequestHandler):
    server: MirrorServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((path, range_header))
        if path in state.hub_redirects:  # like huggingface.co/.../resolve/main/<LFS file>
            digest, size = state.hub_redirects[path]
            self.send_response(302)
            self.send_header("Location", f"/cdn{path}")
            self.send_header("X-Linked-Etag", f'"{digest}"')
            self.send_header("X-Linked-Size", str(size))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = state.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        if path in state.etags:
            self.send_header("ETag", state.etags[path])
        self.end_headers()
        with state.lock:
            cut = path in state.cut_once
            state.cut_once.discard(path)
        self.wfile.write(payload[: len(payload) // 2] if cut else payload)
        self.wfile.flush()


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.state = ServerState()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def publish(self, name: str, local: Path) -> None:
        """Serve `local`/<installed name> at the path of each of the model's published URLs."""
        for file in published.CATALOGUE[name].files:
            self.state.files[urlsplit(file.url).path] = (local / file.name).read_bytes()

    def hub_redirect(self, path: str, digest: str | None = None) -> None:
        """Answer `path` like the Hub answers an LFS file: a redirect with the LFS digest."""
        body = self.state.files.pop(path)
        self.state.files[f"/cdn{path}"] = body
        self.state.hub_redirects[path] = (digest or sha256(body), len(body))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny checkpoints in the published formats: biggan/, cyclegan/horse2zebra/, gpt2/."""
    root = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)
    config = BigGANConfig(channel_width=4, num_classes=1000)  # BigGAN-deep 128 layout
    (root / "biggan").mkdir()
    (root / "biggan" / "config.json").write_text(config.to_json_string(), encoding="utf-8")
    torch.save(BigGAN(config).state_dict(), root / "biggan" / "pytorch_model.bin")
    write_cyclegan(root / "cyclegan", "horse2zebra", seed=1)
    write_gpt2(root / "gpt2")
    return root


@pytest.fixture
def server(checkpoints: Path) -> Iterator[MirrorServer]:
    mirror = MirrorServer()
    mirror.publish("biggan-deep-128", checkpoints / "biggan")
    mirror.publish("horse2zebra", checkpoints / "cyclegan" / "horse2zebra")
    mirror.publish("style_monet", checkpoints / "cyclegan" / "horse2zebra")
    mirror.publish("gpt2", checkpoints / "gpt2")
    thread = threading.Thread(target=mirror.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield mirror
    mirror.shutdown()
    mirror.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror serves tiny checkpoints, not the published files the real pins are for;
    the tests of pinning set their own."""
    monkeypatch.setattr(published, "PINNED_SHA256", MappingProxyType({}))


@pytest.fixture(autouse=True)
def _no_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fetch.INTO_ENV, raising=False)
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.delenv(fetch.MODELS_ENV, raising=False)
    monkeypatch.delenv(fetch.ALLOW_HTTP_ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fetch_args(server: MirrorServer, into: Path, *names: str, quiet: bool = True) -> list[str]:
    """A fetch from the local plain-http mirror, which --allow-http accepts for unpinned files."""
    args = ["models", "fetch", *names, "--into", str(into), "--mirror", server.url, "--allow-http"]
    return [*args, "--quiet"] if quiet else args


def manifest(directory: Path) -> dict[str, object]:
    return json.loads((directory / "genmedia.json").read_text())


# --- fetching each kind ------------------------------------------------------------------


def test_biggan_installs_in_the_serving_layout_and_loads(
    server: MirrorServer, checkpoints: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *fetch_args(server, tmp_path, "biggan-deep-128"))
    assert code == 0, err
    target = tmp_path / "biggan"
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "genmedia.json",
        "pytorch_model.bin",
    ]
    for name in ("config.json", "pytorch_model.bin"):
        assert (target / name).read_bytes() == (checkpoints / "biggan" / name).read_bytes()
    info = manifest(target)
    assert info["name"] == "biggan-deep-128"
    assert info["source"] == [
        biggan_package.PRETRAINED_CONFIG_ARCHIVE_MAP["biggan-deep-128"],
        biggan_package.PRETRAINED_MODEL_ARCHIVE_MAP["biggan-deep-128"],
    ]
    assert info["resolution"] == 128
    assert info["dataset"] == "ImageNet-1k"
    assert info["classes"] == "imagenet"
    assert "BigGAN-deep" in str(info["architecture"])
    assert info["sha256"] == {
        name: sha256((target / name).read_bytes()) for name in ("config.json", "pytorch_model.bin")
    }
    assert info["mirror"] == server.url
    assert str(target) in out and info["sha256"]["pytorch_model.bin"] in out  # type: ignore[index]
    assert not (tmp_path / fetch.STAGING_DIR).exists()
    assert load_biggan(target).config.output_dim == 128


@pytest.mark.parametrize(
    ("name", "dataset"), [("horse2zebra", "horse2zebra"), ("style_monet", "monet2photo")]
)
def test_cyclegan_installs_as_latest_net_g_per_direction_and_loads(
    server: MirrorServer,
    checkpoints: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    dataset: str,
) -> None:
    code, _, err = run(capsys, *fetch_args(server, tmp_path, name, quiet=False))
    assert code == 0, err
    assert "latest_net_G.pth" in err and "100%" in err  # the progress bar
    target = tmp_path / "cyclegan" / name
    original = (checkpoints / "cyclegan" / "horse2zebra" / "latest_net_G.pth").read_bytes()
    assert (target / "latest_net_G.pth").read_bytes() == original
    info = manifest(target)
    assert info["source"] == [
        f"https://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
    ]
    assert (info["name"], info["dataset"], info["resolution"]) == (name, dataset, 256)
    assert "classes" not in info
    assert info["sha256"] == {"latest_net_G.pth": sha256(original)}
    assert load_generator(target / "latest_net_G.pth").config.ngf == 8


def test_gpt2_from_a_hub_like_server_checks_the_linked_etag_and_loads(
    server: MirrorServer, checkpoints: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.hub_redirect(GPT2_WEIGHTS_PATH)  # the right LFS digest on the redirect
    # Small files get a git blob id as ETag: not a SHA-256, so not a digest to check.
    server.state.etags[f"{GPT2_RESOLVE}/config.json"] = f'"{"ab" * 20}"'
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "gpt2"))
    assert code == 0, err
    target = tmp_path / "gpt2"
    files = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    files += ["vocab.json", "merges.txt"]
    for name in files:
        assert (target / name).read_bytes() == (checkpoints / "gpt2" / name).read_bytes()
    info = manifest(target)
    assert (info["name"], info["dataset"], info["resolution"]) == ("gpt2", "WebText", 0)
    assert info["source"] == [f"https://huggingface.co{GPT2_RESOLVE}/{name}" for name in files]
    assert sorted(info["sha256"]) == sorted(files)  # type: ignore[arg-type]
    assert server.state.requests_for(f"/cdn{GPT2_WEIGHTS_PATH}") == [None]
    model = load_gpt2(target)
    tokenizer = Tokenizer.from_file(str(target / "tokenizer.json"))
    assert model.config.vocab_size == tokenizer.get_vocab_size()


# --- resuming ----------------------------------------------------------------------------


def test_a_cut_download_resumes_with_range_in_the_same_run(
    server: MirrorServer, checkpoints: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = server.state.files[H2Z_PATH]
    server.state.cut_once.add(H2Z_PATH)
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 0, err
    assert server.state.requests_for(H2Z_PATH) == [None, f"bytes={len(original) // 2}-"]
    installed = tmp_path / "cyclegan" / "horse2zebra" / "latest_net_G.pth"
    assert installed.read_bytes() == original


def test_a_cut_download_resumes_on_the_next_run(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = server.state.files[H2Z_PATH]
    server.state.cut_once.add(H2Z_PATH)
    args = [*fetch_args(server, tmp_path, "horse2zebra"), "--retries", "0"]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert f"{server.url}{H2Z_PATH}" in err and "resume" in err
    part = tmp_path / fetch.STAGING_DIR / "horse2zebra" / "latest_net_G.pth.part"
    assert part.read_bytes() == original[: len(original) // 2]
    assert not (tmp_path / "cyclegan").exists()  # nothing installed

    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert server.state.requests_for(H2Z_PATH)[-1] == f"bytes={len(original) // 2}-"
    assert (tmp_path / "cyclegan" / "horse2zebra" / "latest_net_G.pth").read_bytes() == original
    assert not part.exists()


def test_a_server_that_ignores_range_is_downloaded_from_the_start(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = server.state.files[H2Z_PATH]
    server.state.ignore_range = True
    part = tmp_path / fetch.STAGING_DIR / "horse2zebra" / "latest_net_G.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # a stale partial download that must not survive
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 0, err
    assert server.state.requests_for(H2Z_PATH) == ["bytes=1000-"]
    assert (tmp_path / "cyclegan" / "horse2zebra" / "latest_net_G.pth").read_bytes() == original


def test_a_complete_partial_file_is_finished_without_downloading_again(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = server.state.files[H2Z_PATH]
    part = tmp_path / fetch.STAGING_DIR / "horse2zebra" / "latest_net_G.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(original)  # the last run stopped after the last byte
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 0, err
    assert server.state.requests_for(H2Z_PATH) == [f"bytes={len(original)}-"]  # answered 416
    assert (tmp_path / "cyclegan" / "horse2zebra" / "latest_net_G.pth").read_bytes() == original


# --- integrity ---------------------------------------------------------------------------


def test_a_wrong_linked_etag_installs_nothing_and_keeps_the_installed_model(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *fetch_args(server, tmp_path, "gpt2"))[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "gpt2").iterdir()}
    server.hub_redirect(GPT2_WEIGHTS_PATH, digest="0" * 64)
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "gpt2"), "--force")
    assert code == 1
    assert f"{server.url}{GPT2_WEIGHTS_PATH}" in err and "SHA-256" in err and "0" * 64 in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "gpt2").iterdir()} == before
    staged = tmp_path / fetch.STAGING_DIR / "gpt2"
    assert not (staged / "model.safetensors.part").exists()  # the corrupt file is gone
    assert not [p for p in (tmp_path).iterdir() if p.name.startswith(".gpt2.")]  # no temp dirs


def test_a_wrong_etag_on_the_file_itself_installs_nothing(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.state.etags[H2Z_PATH] = f'W/"{"f" * 64}"'
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 1
    assert "ETag" in err and f"{server.url}{H2Z_PATH}" in err
    assert not (tmp_path / "cyclegan").exists()


def test_the_pinned_digest_is_checked(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    url = published.CATALOGUE["horse2zebra"].files[0].url
    monkeypatch.setattr(published, "PINNED_SHA256", MappingProxyType({url: "1" * 64}))
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 1 and "pinned" in err and "1" * 64 in err
    assert not (tmp_path / "cyclegan").exists()

    right = sha256(server.state.files[H2Z_PATH])
    monkeypatch.setattr(published, "PINNED_SHA256", MappingProxyType({url: right}))
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 0, err
    assert manifest(tmp_path / "cyclegan" / "horse2zebra")["sha256"] == {"latest_net_G.pth": right}


def test_an_unpinned_file_over_plain_http_is_refused_without_allow_http(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["models", "fetch", "horse2zebra", "--into", str(tmp_path), "--mirror", server.url]
    code, _, err = run(capsys, *args, "--quiet")
    assert code == 1
    assert f"{server.url}{H2Z_PATH} is plain http" in err and "--allow-http" in err
    assert server.state.requests == []  # refused before anything was asked
    assert not (tmp_path / "cyclegan").exists()


def test_a_pinned_file_comes_over_plain_http_and_is_checked_against_its_pin(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    url = published.CATALOGUE["horse2zebra"].files[0].url
    right = sha256(server.state.files[H2Z_PATH])
    monkeypatch.setattr(published, "PINNED_SHA256", MappingProxyType({url: right}))
    args = ["models", "fetch", "horse2zebra", "--into", str(tmp_path), "--mirror", server.url]
    code, _, err = run(capsys, *args, "--quiet")
    assert code == 0, err
    assert manifest(tmp_path / "cyclegan" / "horse2zebra")["sha256"] == {"latest_net_G.pth": right}


class RedirectToHttp(BaseHTTPRequestHandler):
    """An https server that sends every request on to a plain-http one (a downgrade)."""

    server: TlsRedirector

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


class TlsRedirector(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pki: Pki, target: str) -> None:
        super().__init__(("127.0.0.1", 0), RedirectToHttp)
        self.target = target
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server.cert, pki.server.key)
        self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


def test_a_redirect_from_https_to_plain_http_is_refused_for_an_unpinned_file(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))  # urllib trusts the test CA
    redirector = TlsRedirector(pki, server.url)
    thread = threading.Thread(target=redirector.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        args = ["models", "fetch", "horse2zebra", "--into", str(tmp_path / "w")]
        code, _, err = run(capsys, *args, "--mirror", redirector.url, "--quiet")
        assert code == 1
        assert "from https to plain http" in err and f"{server.url}{H2Z_PATH}" in err
        assert server.state.requests_for(H2Z_PATH) == []  # never fetched from the http side
        # The same redirect is followed for a pinned file: its pin protects it.
        url = published.CATALOGUE["horse2zebra"].files[0].url
        right = sha256(server.state.files[H2Z_PATH])
        monkeypatch.setattr(published, "PINNED_SHA256", MappingProxyType({url: right}))
        code, _, err = run(capsys, *args, "--mirror", redirector.url, "--quiet")
        assert code == 0, err
    finally:
        redirector.shutdown()
        redirector.server_close()
        thread.join(timeout=5)


def test_every_pin_is_a_sha256_of_a_catalogue_url() -> None:
    pins = PUBLISHED_PINS
    urls = {file.url for model in published.CATALOGUE.values() for file in model.files}
    assert pins and set(pins) <= urls
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in pins.values())
    assert all(url.startswith("https://") for url in urls)  # every publisher's, over TLS


def test_a_size_that_disagrees_with_x_linked_size_installs_nothing(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.hub_redirect(GPT2_WEIGHTS_PATH)
    server.state.files[f"/cdn{GPT2_WEIGHTS_PATH}"] += b"tail"  # more than the redirect says
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "gpt2"))
    assert code == 1 and "X-Linked-Size" in err
    assert not (tmp_path / "gpt2").exists()


def test_an_intact_installed_model_is_not_downloaded_again(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))[0] == 0
    code, out, _ = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 0 and "already installed" in out
    assert len(server.state.requests_for(H2Z_PATH)) == 1

    installed = tmp_path / "cyclegan" / "horse2zebra" / "latest_net_G.pth"
    installed.write_bytes(b"damaged")
    assert run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))[0] == 0
    assert len(server.state.requests_for(H2Z_PATH)) == 2
    assert installed.read_bytes() == server.state.files[H2Z_PATH]


# --- errors ------------------------------------------------------------------------------


def test_404_exits_1_naming_the_url(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del server.state.files[H2Z_PATH]
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))
    assert code == 1
    assert f"{server.url}{H2Z_PATH}: HTTP 404" in err and "mirror" in err
    assert "Traceback" not in err
    assert not (tmp_path / "cyclegan").exists()
    assert not (tmp_path / fetch.STAGING_DIR).exists()  # no empty leftovers


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_exits_1_with_a_message_and_no_traceback(tmp_path: Path) -> None:
    mirror = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "services.client", "models", "fetch", "horse2zebra",
         "--into", str(tmp_path), "--mirror", mirror, "--allow-http"],
        capture_output=True, text=True, timeout=60, cwd=REPOSITORY,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPOSITORY}:{REPOSITORY / 'models'}"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"{mirror}{H2Z_PATH}" in result.stderr
    assert "connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_dns_failure_says_offline_and_how_to_use_a_mirror(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    code, _, err = run(capsys, "models", "fetch", "horse2zebra", "--into", str(tmp_path))
    assert code == 1
    assert "https://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/horse2zebra.pth" in err
    assert "cannot resolve host" in err and "--mirror" in err and fetch.MIRROR_ENV in err


def test_unknown_name_suggests_the_closest_and_downloads_nothing(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *fetch_args(server, tmp_path, "horse2zebra", "hors2zebra"))
    assert code == 1 and "hors2zebra" in err and "horse2zebra" in err
    assert server.state.requests == []


def test_mirror_and_weights_root_come_from_the_environment(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(fetch.MIRROR_ENV, server.url)
    monkeypatch.setenv(fetch.ALLOW_HTTP_ENV, "true")
    monkeypatch.setenv(fetch.INTO_ENV, str(tmp_path / "weights"))
    code, _, err = run(capsys, "models", "fetch", "horse2zebra", "--quiet")
    assert code == 0, err
    assert (tmp_path / "weights" / "cyclegan" / "horse2zebra" / "latest_net_G.pth").is_file()


def test_model_names_come_from_the_environment_when_none_are_given(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # What the Kubernetes init step does: names from a ConfigMap, no shell.
    monkeypatch.setenv(fetch.MODELS_ENV, "horse2zebra, style_monet")
    code, out, err = run(capsys, *fetch_args(server, tmp_path))
    assert code == 0, err
    for direction in ("horse2zebra", "style_monet"):
        assert (tmp_path / "cyclegan" / direction / "latest_net_G.pth").is_file()
    assert "horse2zebra: installed" in out


def test_no_names_and_no_environment_is_an_error_that_says_what_to_set(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *fetch_args(server, tmp_path))
    assert code == 1 and fetch.MODELS_ENV in err
    assert server.state.requests == []


# --- catalogue ---------------------------------------------------------------------------


def test_models_list_prints_every_model_with_its_size_and_what_is_installed(
    server: MirrorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *fetch_args(server, tmp_path, "horse2zebra"))[0] == 0
    code, out, _ = run(capsys, "models", "list", "--into", str(tmp_path))
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(rows) == set(published.CATALOGUE)
    assert re.search(r"~211 MB\s+ImageNet-1k\s*$", rows["biggan-deep-128"])
    assert re.search(r"cyclegan/horse2zebra/\s+~46 MB\s+horse2zebra\s+yes$", rows["horse2zebra"])
    assert not rows["zebra2horse"].endswith("yes")
    assert "~6.43 GB" in rows["gpt2-xl"]


def test_catalogue_uses_the_publishers_urls() -> None:
    catalogue = published.CATALOGUE
    for size in (128, 256, 512):
        name = f"biggan-deep-{size}"
        assert [f.url for f in catalogue[name].files] == [
            biggan_package.PRETRAINED_CONFIG_ARCHIVE_MAP[name],
            biggan_package.PRETRAINED_MODEL_ARCHIVE_MAP[name],
        ]
        assert catalogue[name].resolution == size
    cyclegan = [m.name for m in catalogue.values() if m.family == published.Family.CYCLEGAN]
    assert cyclegan == CYCLEGAN_SCRIPT_NAMES
    for name in cyclegan:
        (file,) = catalogue[name].files
        assert (
            file.url == f"https://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
        )
        assert catalogue[name].install_path == f"cyclegan/{name}"
    for name, revision in (
        ("gpt2", published.GPT2_REVISION),
        ("gpt2-medium", "main"),
        ("gpt2-large", "main"),
        ("gpt2-xl", "main"),
    ):
        urls = {f.url for f in catalogue[name].files}
        hub = f"https://huggingface.co/openai-community/{name}/resolve/{revision}"
        assert f"{hub}/model.safetensors" in urls
        assert len(urls) == 6


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/models.huggingface.co/biggan/x.bin"),
        ("https://mirror.example/pub/", "https://mirror.example/pub/models.huggingface.co/biggan/x.bin"),
        (None, "https://s3.amazonaws.com/models.huggingface.co/biggan/x.bin"),
    ],
)  # fmt: skip
def test_mirror_replaces_scheme_and_host_and_keeps_the_path(
    mirror: str | None, expected: str
) -> None:
    url = "https://s3.amazonaws.com/models.huggingface.co/biggan/x.bin"
    assert fetch.mirrored(url, mirror) == expected


def test_a_mirror_that_is_not_an_http_url_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "models", "fetch", "gpt2", "--into", str(tmp_path), "--mirror", "ftp://x"
    )
    assert code == 1 and "ftp://x" in err
