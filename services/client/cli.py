"""The ``genmedia`` command line: every RPC of the public API."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from tqdm import tqdm

from genmedia.v1 import provenance_pb2 as provenance_pb
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia_shared.media_types import sniff_video_mime
from services.client.fetch import (
    ALLOW_HTTP_ENV,
    MIRROR_ENV,
    MODELS_ENV,
    FetchError,
    FetchOptions,
    catalogue_lines,
    default_allow_http,
    default_into,
    default_mirror,
    fetch_lines,
    fetch_model,
    lookup,
)
from services.client.sdk import (
    DEFAULT_TARGET,
    IMAGE_FORMATS,
    CleartextKeyError,
    GenmediaClient,
    GenmediaError,
    file_chunks,
    tls_credentials,
)

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
USAGE_ERROR = 2  # as argparse exits on a bad command line
CLEARTEXT_KEY_REFUSED = (
    "genmedia: the API key would cross the network to {target} in cleartext: use --tls "
    "(with --tls-ca PEM if needed), or pass --insecure to send it anyway"
)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "image"


def _class_selector(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def image_generate(client: GenmediaClient, args: argparse.Namespace) -> None:
    response = client.generate_images(
        classes=[_class_selector(c) for c in args.classes],
        count=args.count,
        seed=args.seed,
        truncation=args.truncation,
        image_format=args.format,
        width=args.width,
        height=args.height,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    for generated in response.images:
        slug = _slug(generated.image_class.name)
        index = seen[slug] = seen.get(slug, -1) + 1
        path = args.out / f"{slug}-{index}.{EXTENSIONS[args.format]}"
        path.write_bytes(generated.image.data)
        image = generated.image
        print(f"{path}  {image.width}x{image.height}  class {generated.image_class.id} "
              f"{generated.image_class.name!r}")  # fmt: skip
    print(f"seed {response.seed}  request {response.request_id}  (synthetic, provenance embedded)")


def image_classes(client: GenmediaClient, args: argparse.Namespace) -> None:
    for image_class in client.list_classes(args.query).classes:
        synonyms = f"  ({', '.join(image_class.synonyms)})" if image_class.synonyms else ""
        print(f"{image_class.id:4d}  {image_class.name}{synonyms}")


FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def image_translate(client: GenmediaClient, args: argparse.Namespace) -> None:
    image_format = args.format or _format_from_suffix(args.out)
    response = client.translate_image(args.input.read_bytes(), args.model, image_format)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(response.image.data)
    print(f"{args.out}  {response.image.width}x{response.image.height}  "
          f"request {response.request_id}  (synthetic, provenance embedded)")  # fmt: skip


def video_frames(client: GenmediaClient, args: argparse.Namespace) -> None:
    """Every image in a directory (in name order) as one TranslateFrames stream."""
    paths = sorted(p for p in args.input.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise SystemExit(f"no PNG, JPEG or WebP frames in {args.input}")
    args.out.mkdir(parents=True, exist_ok=True)
    frames = (path.read_bytes() for path in paths)
    answers = client.translate_frames(frames, args.model, args.format)
    for answer in tqdm(answers, total=len(paths), unit="frame", desc="frames"):
        name = paths[answer.index].with_suffix("." + args.format).name
        (args.out / name).write_bytes(answer.image.data)
    print(f"{len(paths)} frames -> {args.out}  (synthetic, provenance embedded in each)")


def video_translate(client: GenmediaClient, args: argparse.Namespace) -> None:
    """A video file through TranslateVideo, with a progress bar; the result to --out."""
    answers = client.translate_video(file_chunks(args.input), args.model, args.hold_still_below)
    summary = None
    with tqdm(unit="frame", desc="frames") as bar, args.out.open("wb") as out:
        for answer in answers:
            kind = answer.WhichOneof("item")
            if kind == "progress":
                bar.total = answer.progress.frames_total or None
                bar.update(answer.progress.frames_done - bar.n)
            elif kind == "chunk":
                out.write(answer.chunk)
            elif kind == "summary":
                summary = answer.summary
    if summary is None:
        raise SystemExit("genmedia video translate: the stream ended without a summary")
    credentials = "signed Content Credentials, " if summary.content_credentials else ""
    audio = ", audio copied" if summary.audio_copied else ""
    print(f"{args.out}  {summary.frames} frames {summary.width}x{summary.height} at "
          f"{summary.frame_rate:g} fps, {summary.container}/{summary.codec}{audio}  "
          f"(synthetic: {credentials}watermark in every frame)")  # fmt: skip


def image_models(client: GenmediaClient, args: argparse.Namespace) -> None:
    for model in client.list_models().models:
        state = "ready" if model.ready else "NOT READY"
        print(f"{model.name:20s} {model.source_domain} -> {model.target_domain}  {state}")


def verify(client: GenmediaClient, args: argparse.Namespace) -> None:
    """Prints the verdict on a text's watermark, or on a file's Content Credentials."""
    if args.text is not None:
        checked = client.verify_text(args.text)
        verdict = provenance_pb.Verdict.Name(checked.verdict).removeprefix("VERDICT_")
        mark = checked.watermark
        print(f"text: {verdict}: {checked.explanation}")
        if checked.detail_withheld:
            print("  (figures are for callers with an API key)")
            return
        expected = f"expected {mark.expected_green_fraction:.0%}"
        print(f"  {mark.green_tokens} of {mark.tokens_scored} tokens green ({expected}), "
              f"z = {mark.z_score:.2f}")  # fmt: skip
        return
    if args.file is None:
        raise SystemExit("genmedia verify: give a FILE or --text")
    data = args.file.read_bytes()
    is_video = sniff_video_mime(data) is not None
    response = client.verify_video(data) if is_video else client.verify_image(data)
    found = response.content_credentials
    verdict = provenance_pb.Verdict.Name(response.verdict).removeprefix("VERDICT_")
    print(f"{args.file}: {verdict}: {response.explanation}")
    if is_video:
        print(f"  watermark read over {response.frames_checked} frames")
    if found.present:
        print(f"  C2PA: {found.validation_state}; actions {', '.join(found.actions)}; "
              f"signer {found.signer!r}")  # fmt: skip
        if found.failures:
            print(f"  failed checks: {', '.join(found.failures)}")
        if found.HasField("provenance"):
            record = found.provenance
            print(f"  model {record.model} version {record.model_version}, seed {record.seed}, "
                  f"request {record.request_id}, {record.created_at.ToJsonString()}")  # fmt: skip


def text_generate(client: GenmediaClient, args: argparse.Namespace) -> None:
    options = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "stop": args.stop,
        "repetition_penalty": args.repetition_penalty,
        "truncate_prompt": args.truncate_prompt,
    }
    if args.stream:
        last = None
        for last in client.stream_text(args.prompt, **options):
            sys.stdout.write(last.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        final = last
    else:
        final = client.generate_text(args.prompt, **options)
        print(final.text)
    if final is not None:
        reason = text_pb.FinishReason.Name(final.finish_reason).removeprefix("FINISH_REASON_")
        dropped = final.usage.truncated_prompt_tokens
        if dropped:
            print(f"[prompt truncated: its first {dropped} tokens were dropped]", file=sys.stderr)
        print(f"[{final.usage.generated_tokens} tokens, finished: {reason.lower()}, "
              f"seed {final.provenance.seed}, model {final.provenance.model}, synthetic]",
              file=sys.stderr)  # fmt: skip


def models_list(args: argparse.Namespace) -> None:
    for line in catalogue_lines(args.into):
        print(line)


def models_fetch(args: argparse.Namespace) -> None:
    options = FetchOptions(
        into=args.into,
        mirror=args.mirror,
        retries=args.retries,
        timeout_s=args.socket_timeout,
        progress=not args.quiet,
        force=args.force,
        allow_http=args.allow_http,
    )
    names = args.names or os.environ.get(MODELS_ENV, "").replace(",", " ").split()
    if not names:
        raise FetchError(
            f"name the models to fetch (or set {MODELS_ENV}); see `genmedia models list`"
        )
    for name in names:  # every name checked before anything is downloaded
        lookup(name)
    for name in names:
        for line in fetch_lines(fetch_model(name, options)):
            print(line, flush=True)


def _run_models(args: argparse.Namespace) -> int:
    """The `models` commands: local files and HTTP only, no gateway."""
    try:
        args.run(args)
    except FetchError as error:
        print(f"genmedia: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genmedia: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"genmedia: {error}", file=sys.stderr)
        return 1
    return 0


def _format_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}.get(suffix, "png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genmedia", description="Call a genmedia gateway.")
    parser.add_argument(
        "--target",
        default=os.environ.get("GENMEDIA_TARGET", DEFAULT_TARGET),
        help="gateway host:port (env GENMEDIA_TARGET; default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GENMEDIA_API_KEY"),
        help="API key, sent as 'authorization: Bearer <key>' (env GENMEDIA_API_KEY)",
    )
    parser.add_argument("--tls", action="store_true", help="connect over TLS (system roots)")
    parser.add_argument("--tls-ca", type=Path, metavar="PEM",
                        help="CA bundle to trust (implies --tls)")  # fmt: skip
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="client certificate for mutual TLS (with --tls-key)")  # fmt: skip
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="client key for mutual TLS")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="send the API key without TLS even to a host other than this machine",
    )
    groups = parser.add_subparsers(dest="group", required=True)

    image = groups.add_parser("image", help="generate or translate images").add_subparsers(
        dest="command", required=True
    )
    generate = image.add_parser("generate", help="class-conditional images (BigGAN)")
    generate.add_argument("--class", dest="classes", action="append", required=True,
                          help="class name or id; repeat for several")  # fmt: skip
    generate.add_argument("--count", type=int, default=1, help="images per class")
    generate.add_argument("--seed", type=int, help="same seed, same images")
    generate.add_argument("--truncation", type=float, default=0.0, help="(0, 1]; default 0.4")
    generate.add_argument("--format", choices=IMAGE_FORMATS, default="png")
    generate.add_argument("--width", type=int, default=0)
    generate.add_argument("--height", type=int, default=0)
    generate.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    generate.set_defaults(run=image_generate)

    classes = image.add_parser("classes", help="list the classes (optionally filtered)")
    classes.add_argument("query", nargs="?", default="")
    classes.set_defaults(run=image_classes)

    translate = image.add_parser("translate", help="image-to-image translation (CycleGAN)")
    translate.add_argument("input", type=Path, help="PNG, JPEG or WebP file")
    translate.add_argument("--model", required=True, help="direction, e.g. horse2zebra")
    translate.add_argument("--out", type=Path, required=True, help="output file")
    translate.add_argument("--format", choices=IMAGE_FORMATS, help="default: from --out suffix")
    translate.set_defaults(run=image_translate)

    models = image.add_parser("models", help="list translation directions")
    models.set_defaults(run=image_models)

    video = groups.add_parser(
        "video", help="translate videos and frame streams (CycleGAN)"
    ).add_subparsers(dest="command", required=True)
    frames = video.add_parser("frames", help="a directory of frames, as one stream")
    frames.add_argument("input", type=Path, help="directory of PNG, JPEG or WebP frames")
    frames.add_argument("--model", required=True, help="direction, e.g. horse2zebra")
    frames.add_argument("--out", type=Path, required=True, help="output directory")
    frames.add_argument("--format", choices=IMAGE_FORMATS, default="png")
    frames.set_defaults(run=video_frames)
    translating = video.add_parser(
        "translate", help="a video file (MP4/MOV or WebM/MKV), audio kept, with progress"
    )
    translating.add_argument("input", type=Path, help="video file")
    translating.add_argument("--model", required=True, help="direction, e.g. horse2zebra")
    translating.add_argument("--out", type=Path, required=True, help="output file")
    translating.add_argument(
        "--hold-still-below",
        type=int,
        default=0,
        metavar="LEVELS",
        help="temporal hold against flicker: pixels whose input moved less than this keep "
        "their output (6 suits H.264; default 0: off)",
    )
    translating.set_defaults(run=video_translate)

    text = groups.add_parser("text", help="generate text (GPT-2)").add_subparsers(
        dest="command", required=True
    )
    text_gen = text.add_parser("generate", help="continue a prompt")
    text_gen.add_argument("prompt")
    text_gen.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    text_gen.add_argument("--max-new-tokens", type=int, default=0, help="default 64")
    text_gen.add_argument("--temperature", type=float, help="0..2, 0 is greedy; default 1")
    text_gen.add_argument("--top-k", type=int, default=0)
    text_gen.add_argument("--top-p", type=float)
    text_gen.add_argument("--seed", type=int)
    text_gen.add_argument("--stop", action="append", default=[], help="stop sequence; repeatable")
    text_gen.add_argument(
        "--repetition-penalty", type=float, help="(0, 10], above 1 discourages repeats; default 1"
    )
    text_gen.add_argument(
        "--truncate-prompt",
        action="store_true",
        help="keep the end of a prompt too long for the context instead of failing",
    )
    text_gen.set_defaults(run=text_generate)

    models_help = "list, download and install the published checkpoints"
    verifying = groups.add_parser(
        "verify", help="check a file's Content Credentials or a text's watermark (no key needed)"
    )
    verifying.add_argument(
        "file", type=Path, nargs="?", help="PNG, JPEG or WebP image, or MP4/MOV/WebM video"
    )
    verifying.add_argument("--text", help="check this text for genmedia's watermark instead")
    verifying.set_defaults(run=verify)

    models_group = groups.add_parser("models", help=models_help).add_subparsers(
        dest="command", required=True
    )
    into_help = (
        "weights root to install into (env GENMEDIA_WEIGHTS_DIR; default %(default)s); "
        "layout biggan/, cyclegan/<direction>/, gpt2/"
    )
    listing = models_group.add_parser("list", help="the published checkpoints and their sizes")
    listing.add_argument("--into", type=Path, metavar="DIR", default=default_into(), help=into_help)
    listing.set_defaults(run=models_list)

    fetch = models_group.add_parser(
        "fetch", help="download, verify and install published checkpoints (resumable)"
    )
    fetch.add_argument("names", nargs="*", metavar="NAME",
                       help=f"see `genmedia models list`; none: env {MODELS_ENV}")  # fmt: skip
    fetch.add_argument("--into", type=Path, metavar="DIR", default=default_into(), help=into_help)
    fetch.add_argument("--mirror", metavar="URL", default=default_mirror(),
                       help=f"http(s)://host[:port][/prefix] replacing every URL's scheme://host "
                            f"(env {MIRROR_ENV})")  # fmt: skip
    fetch.add_argument("--retries", type=int, metavar="N", default=3,
                       help="resumes per file after a cut (default %(default)s)")  # fmt: skip
    fetch.add_argument("--socket-timeout", type=float, metavar="S", default=30.0,
                       help="seconds without data, then retry (default %(default)s)")  # fmt: skip
    fetch.add_argument("--force", action="store_true", help="download even if installed")
    fetch.add_argument("--allow-http", action="store_true", default=default_allow_http(),
                       help="fetch files without a pinned SHA-256 over plain http (a mirror "
                            f"on a network you trust; env {ALLOW_HTTP_ENV})")  # fmt: skip
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    fetch.set_defaults(run=models_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "models":
        return _run_models(args)
    secure = args.tls or args.tls_ca or args.tls_cert
    try:
        credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key) if secure else None
        with GenmediaClient(
            args.target,
            timeout_s=args.timeout,
            credentials=credentials,
            api_key=args.api_key,
            insecure=args.insecure,
        ) as client:
            args.run(client, args)
    except CleartextKeyError:
        print(CLEARTEXT_KEY_REFUSED.format(target=args.target), file=sys.stderr)
        return USAGE_ERROR
    except GenmediaError as error:
        print(f"genmedia: {error.code.name}: {error.details}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"genmedia: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
