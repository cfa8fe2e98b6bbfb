"""Download, verify and install published checkpoints (`genmedia models fetch`).

Standard library HTTP (urllib, so proxies from the environment apply) plus a
tqdm bar per file. For each file of a model:

- Resumable: bytes go to `<into>/.genmedia-fetch/<model>/<file>.part`; an
  interrupted download continues from there with an HTTP Range request, in
  the same run (`--retries`) or the next one. A server that ignores Range
  (answers 200) is downloaded again from the start.
- Verified: the size the server declared (Content-Length, Content-Range,
  X-Linked-Size) and the SHA-256 pinned in `published.PINNED_SHA256` and/or
  sent as an ETag / X-Linked-ETag that is a SHA-256 hex digest (the Hugging
  Face Hub sends the LFS digest on its redirect). A file that fails is
  deleted.
- Atomic: the verified files are assembled with their genmedia.json in a
  temporary directory beside the target, which then replaces the target;
  a failed fetch leaves any installed model as it was.

- Authentic: a file without a pinned digest only comes over https, and a
  redirect from https to plain http is refused for it; `--allow-http`
  accepts plain http from a mirror on a network you trust. A pinned file is
  checked against its pin whatever the transport.

`--mirror URL` (or GENMEDIA_FETCH_MIRROR) replaces scheme://host of every URL
and keeps the path, for tests and air-gapped sites.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from services.client.published import CATALOGUE, PublishedFile, PublishedModel

INTO_ENV = "GENMEDIA_WEIGHTS_DIR"
MIRROR_ENV = "GENMEDIA_FETCH_MIRROR"
ALLOW_HTTP_ENV = "GENMEDIA_FETCH_ALLOW_HTTP"
"""Set to true for --allow-http (an air-gapped site's plain-http mirror)."""
MODELS_ENV = "GENMEDIA_MODELS"
"""Models to fetch when the command names none (comma- or space-separated): set by a ConfigMap."""
DEFAULT_INTO = Path("var/published")
STAGING_DIR = ".genmedia-fetch"
MANIFEST_NAME = "genmedia.json"
CHUNK_BYTES = 1 << 20
USER_AGENT = "genmedia-fetch/0.1 (python-urllib)"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")


class FetchError(Exception):
    """A fetch failed; the message names the URL or file and says what to do."""


class _Retryable(Exception):
    """A transfer broke off after it had started (or the server had a hiccup): try again."""


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: the weights root to install into, a mirror, retries, timeouts."""

    into: Path
    mirror: str | None = None
    retries: int = 3
    retry_wait_s: float = 1.0
    timeout_s: float = 30.0
    progress: bool = True
    force: bool = False
    allow_http: bool = False
    """Accept plain http for files without a pinned digest (a trusted mirror)."""

    def __post_init__(self) -> None:
        if self.mirror is not None:
            parts = urlsplit(self.mirror)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise FetchError(
                    f"mirror {self.mirror!r} must look like http(s)://host[:port][/prefix]"
                )
        if self.retries < 0 or self.timeout_s <= 0:
            raise FetchError("--retries must be >= 0 and --socket-timeout > 0")


def default_into(env: Mapping[str, str] | None = None) -> Path:
    """GENMEDIA_WEIGHTS_DIR when set, else var/published."""
    value = (os.environ if env is None else env).get(INTO_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_INTO


def default_allow_http(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(ALLOW_HTTP_ENV, "").strip().lower()
    return value in ("1", "true", "yes", "on")


def default_mirror(env: Mapping[str, str] | None = None) -> str | None:
    return (os.environ if env is None else env).get(MIRROR_ENV, "").strip() or None


def mirrored(url: str, mirror: str | None) -> str:
    """`url` with its scheme://host replaced by the mirror's (whose path, if any, is a prefix)."""
    if not mirror:
        return url
    original, replacement = urlsplit(url), urlsplit(mirror)
    path = replacement.path.rstrip("/") + original.path
    return urlunsplit((replacement.scheme, replacement.netloc, path, original.query, ""))


def lookup(name: str) -> PublishedModel:
    """The catalogue entry for `name`, or a FetchError suggesting the closest names."""
    try:
        return CATALOGUE[name]
    except KeyError:
        close = difflib.get_close_matches(name, CATALOGUE, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise FetchError(
            f"unknown model {name!r}{hint}; `genmedia models list` shows every name"
        ) from None


# --- HTTP -------------------------------------------------------------------------------


class _RecordingRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib's own and keeps each hop's headers.

    The Hugging Face Hub answers a large file with a redirect to its CDN that
    carries X-Linked-ETag (the LFS SHA-256) and X-Linked-Size; the CDN's own
    response does not.
    """

    def __init__(self, pinned: bool) -> None:
        super().__init__()
        self.hops: list[Message] = []
        self._pinned = pinned

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.hops.append(headers)
        downgrade = urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https"
        if downgrade and not self._pinned:
            # Whoever can see plain http could swap a file no pin protects.
            raise FetchError(
                f"{req.full_url} redirects to {newurl}, from https to plain http, and this "
                "file's SHA-256 is not pinned: refusing it. Fetch it from a mirror that "
                "serves it over https."
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _etag_sha256(value: str | None) -> str | None:
    """The SHA-256 hex digest an ETag carries, if it is one (quoted, maybe weak)."""
    if not value:
        return None
    tag = value.strip().removeprefix("W/").strip('"').lower()
    return tag if _SHA256_HEX.match(tag) else None


def _int_header(headers: Message, name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


@dataclass
class _Declared:
    """What the server said about the whole file."""

    size: int | None = None
    sha256: str | None = None
    sha256_source: str = ""


def _declared(hops: list[Message], final: Message) -> _Declared:
    declared = _Declared()
    for headers in [*hops, final]:
        for header in ("X-Linked-ETag", "ETag"):
            digest = _etag_sha256(headers.get(header))
            if digest and declared.sha256 is None:
                declared.sha256, declared.sha256_source = digest, f"the server's {header}"
        linked_size = _int_header(headers, "X-Linked-Size")
        if linked_size is not None and declared.size is None:
            declared.size = linked_size
    return declared


def _describe_url_error(error: BaseException, url: str) -> str:
    """A sentence on why `url` could not be reached."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    host = urlsplit(url).netloc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host {urlsplit(url).hostname!r} (offline, or DNS fails)"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer from {host} in time"
    return f"cannot connect to {host}: {reason}"


def _what_to_do(options: FetchOptions, part: Path) -> str:
    if options.mirror:
        advice = f"Check that the mirror {options.mirror} is up and serves that path."
    else:
        advice = (
            "This machine may be offline or blocked (proxy variables apply): fetch where a "
            f"network allows it and copy {options.into} here, or serve the files from a mirror "
            f"and pass --mirror URL (or set {MIRROR_ENV})."
        )
    if part.is_file() and part.stat().st_size:
        advice += f" The partial download {part} resumes on the next run."
    return advice


@dataclass
class _Download:
    """One file being downloaded into `part`."""

    url: str
    part: Path
    options: FetchOptions
    pinned: bool = False
    _bar: tqdm | None = field(default=None, init=False)

    def _progress(self, total: int | None, done: int) -> tqdm:
        """The file's bar, shown once the server has answered; reset on every attempt."""
        if self._bar is None:
            self._bar = tqdm(
                desc=self.part.name.removesuffix(".part"),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not self.options.progress,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self._bar.reset(total=total)
        self._bar.update(done)
        return self._bar

    def run(self) -> tuple[str, int, _Declared]:
        """Download with retries; returns (sha256, size, what the server declared)."""
        attempt = 0
        try:
            while True:
                try:
                    return self._attempt()
                except _Retryable as error:
                    attempt += 1
                    if attempt > self.options.retries:
                        raise FetchError(
                            f"download of {self.url} broke off: {error}.\n  "
                            f"Run the same command again to resume from {self.part}."
                        ) from error
                    time.sleep(self.options.retry_wait_s * attempt)
        finally:
            if self._bar is not None:
                self._bar.close()

    def _open(self, offset: int) -> tuple[http.client.HTTPResponse, list[Message]]:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        redirects = _RecordingRedirectHandler(self.pinned)
        opener = urllib.request.build_opener(redirects)
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = opener.open(request, timeout=self.options.timeout_s)
        except urllib.error.HTTPError as error:
            with contextlib.closing(error):
                if error.code == 416 and offset:
                    raise _RangeNotSatisfiable(
                        _content_range(error.headers)[2], _declared(redirects.hops, error.headers)
                    ) from None
                message = f"{self.url}: HTTP {error.code} {error.reason}"
                if error.code >= 500 or error.code == 429:
                    raise _Retryable(message) from None
                where = f"the mirror {self.options.mirror}" if self.options.mirror else "it"
                raise FetchError(
                    f"cannot download {message}.\n  "
                    + (
                        f"The file is not at that address: check {where}, or whether the "
                        "publisher moved the file."
                        if error.code == 404
                        else f"The server refused the request: check {where} and proxy settings."
                    )
                ) from None
        except (TimeoutError, ConnectionResetError, http.client.HTTPException) as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError | ConnectionResetError):
                raise _Retryable(_describe_url_error(error, self.url)) from error
            raise FetchError(
                f"cannot download {self.url}: {_describe_url_error(error, self.url)}.\n  "
                + _what_to_do(self.options, self.part)
            ) from None
        return response, redirects.hops

    def _attempt(self) -> tuple[str, int, _Declared]:
        offset = self.part.stat().st_size if self.part.exists() else 0
        try:
            response, hops = self._open(offset)
        except _RangeNotSatisfiable as error:
            if error.total == offset:  # the last run stopped after the last byte
                error.declared.size = offset
                return _sha256_of(self.part), offset, error.declared
            self.part.unlink()
            raise _Retryable(f"{self.part} does not fit the file on the server") from None
        with response:
            headers = response.headers
            declared = _declared(hops, headers)
            mode = "ab"
            if response.status == 206:
                start, _, total = _content_range(headers)
                if start != offset:  # start again from the first byte
                    self.part.unlink()
                    raise _Retryable(f"asked for bytes from {offset}, got from {start}")
            else:  # 200: the whole file, also when the server ignores Range
                offset, mode = 0, "wb"
                total = _int_header(headers, "Content-Length")
            if declared.size is not None and total is not None and declared.size != total:
                raise FetchError(
                    f"{self.url}: the server declares {declared.size} bytes (X-Linked-Size) "
                    f"but sends {total}; not installing it."
                )
            declared.size = declared.size if total is None else total
            hasher = hashlib.sha256()
            if offset:
                _hash_into(hasher, self.part)
            bar = self._progress(declared.size, offset)
            received = offset
            with self.part.open(mode) as out:
                try:
                    received += _copy(response, out, hasher, bar)
                except (OSError, http.client.HTTPException) as error:
                    raise _Retryable(
                        f"{type(error).__name__} after {out.tell()} of {declared.size} bytes"
                    ) from error
        if declared.size is not None and received != declared.size:
            raise _Retryable(f"connection closed after {received} of {declared.size} bytes")
        return hasher.hexdigest(), received, declared


class _RangeNotSatisfiable(Exception):
    """416: the part already holds `total` bytes or more."""

    def __init__(self, total: int | None, declared: _Declared) -> None:
        super().__init__(total)
        self.total = total
        self.declared = declared


def _content_range(headers: Message) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) from `Content-Range: bytes first-last/total` (None where unknown)."""
    match = _CONTENT_RANGE.match((headers.get("Content-Range") or "").strip())
    if not match:
        return None, None, None
    first, last, total = match.groups()
    return (
        int(first) if first else None,
        int(last) if last else None,
        int(total) if total and total != "*" else None,
    )


def _copy(response: IO[bytes], out: IO[bytes], hasher: hashlib._Hash, bar: tqdm) -> int:
    copied = 0
    while chunk := response.read(CHUNK_BYTES):
        out.write(chunk)
        hasher.update(chunk)
        bar.update(len(chunk))
        copied += len(chunk)
    return copied


def _hash_into(hasher: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            hasher.update(chunk)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    _hash_into(hasher, path)
    return hasher.hexdigest()


# --- install ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A model in place: its directory and the manifest written there."""

    model: PublishedModel
    directory: Path
    manifest: dict[str, object]
    downloaded: bool


def _verify(file: PublishedFile, url: str, part: Path, digest: str, declared: _Declared) -> None:
    expected = [(file.sha256, "the pinned digest (services/client/published.py)")]
    expected.append((declared.sha256, declared.sha256_source))
    for wanted, source in expected:
        if wanted and wanted != digest:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"{url}: SHA-256 {digest} does not match {source} {wanted}.\n  "
                "The download is corrupt or the file changed: deleted it, installed nothing. "
                "Run again to download it afresh; if it fails again, check the mirror or the "
                "publisher."
            )


def _manifest(
    model: PublishedModel, digests: dict[str, str], options: FetchOptions
) -> dict[str, object]:
    return {
        "name": model.name,
        "source": [file.url for file in model.files],
        "architecture": model.architecture,
        "resolution": model.resolution,
        "dataset": model.dataset,
        **model.extra,
        "sha256": digests,
        "mirror": options.mirror,
        "fetched_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def read_manifest(directory: Path) -> dict[str, object] | None:
    """The genmedia.json in `directory`, or None when there is none (or it is unreadable)."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _installed_intact(model: PublishedModel, target: Path) -> dict[str, object] | None:
    """The manifest if `target` holds exactly this model with every file as recorded."""
    manifest = read_manifest(target)
    if manifest is None or manifest.get("name") != model.name:
        return None
    digests = manifest.get("sha256")
    if not isinstance(digests, dict):
        return None
    for file in model.files:
        path = target / file.name
        recorded = digests.get(file.name)
        if not path.is_file() or recorded != _sha256_of(path):
            return None
        if file.sha256 and recorded != file.sha256:
            return None
    return manifest


@contextlib.contextmanager
def _staging_directory(parent: Path, name: str) -> Iterator[Path]:
    """A fresh directory beside the target, removed unless it was moved into place."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _replace_directory(source: Path, target: Path) -> None:
    """Put `source` where `target` is, keeping the old target until the new one is in place."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(source, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_transport(file: PublishedFile, url: str, options: FetchOptions) -> None:
    """Plain http only for a pinned file, or with --allow-http."""
    if urlsplit(url).scheme == "https" or file.sha256 is not None or options.allow_http:
        return
    raise FetchError(
        f"{url} is plain http and the SHA-256 of {file.name} is not pinned, so anyone on the "
        "way could swap it: refusing it. Use an https mirror, or pass --allow-http for a "
        "mirror on a network you trust."
    )


def fetch_model(name: str, options: FetchOptions) -> Installed:
    """Download, verify and install one model; raises FetchError with what to do."""
    model = lookup(name)
    target = options.into / model.install_path
    if not options.force:
        manifest = _installed_intact(model, target)
        if manifest is not None:
            return Installed(model, target, manifest, downloaded=False)
    downloads = options.into / STAGING_DIR / model.name
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FetchError(f"cannot write into {options.into}: {error}") from None
    digests: dict[str, str] = {}
    parts: dict[str, Path] = {}
    try:
        for file in model.files:
            url = mirrored(file.url, options.mirror)
            _check_transport(file, url, options)
            part = downloads / f"{file.name}.part"
            digest, _size, declared = _Download(url, part, options, file.sha256 is not None).run()
            _verify(file, url, part, digest, declared)
            digests[file.name], parts[file.name] = digest, part
    finally:  # keep partial downloads to resume, not empty directories
        for empty in (downloads, downloads.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()
    manifest = _manifest(model, digests, options)
    with _staging_directory(target.parent, target.name) as assembled:
        for file_name, part in parts.items():
            os.replace(part, assembled / file_name)
        (assembled / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
        )
        _replace_directory(assembled, target)
    shutil.rmtree(downloads, ignore_errors=True)
    with contextlib.suppress(OSError):
        downloads.parent.rmdir()  # only when no other download is pending
    return Installed(model, target, manifest, downloaded=True)


# --- command line -----------------------------------------------------------------------


def _size(bytes_: int | None) -> str:
    if bytes_ is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if bytes_ >= scale:
            return f"~{bytes_ / scale:.3g} {unit}"
    return f"~{bytes_} B"


def catalogue_lines(into: Path) -> list[str]:
    """`genmedia models list`: every published model, its size and what is installed."""
    lines = [f"{'NAME':24s} {'INSTALLS INTO':33s} {'SIZE':>9s}  {'DATASET':22s} INSTALLED"]
    for model in CATALOGUE.values():
        manifest = read_manifest(into / model.install_path)
        installed = "yes" if manifest and manifest.get("name") == model.name else ""
        lines.append(
            f"{model.name:24s} {model.install_path + '/':33s} {_size(model.approx_bytes):>9s}  "
            f"{model.dataset:22s} {installed}"
        )
    lines.append(f"(sizes approximate; installed = recorded in {into}/<path>/{MANIFEST_NAME})")
    return lines


def fetch_lines(installed: Installed) -> list[str]:
    """What `genmedia models fetch` prints for one installed model."""
    verb = "installed" if installed.downloaded else "already installed (files verified)"
    lines = [f"{installed.model.name}: {verb} in {installed.directory}"]
    digests = installed.manifest.get("sha256")
    if isinstance(digests, dict):
        lines += [f"  {name}  sha256 {digest}" for name, digest in digests.items()]
    return lines
