"""Every kind of bad input the issue names, sent to a live stack, and the answer it gets.

`tests/integration/test_bad_inputs.py` checks that each case gets its expected
status and that docs/RELIABILITY.md shows the live answer; the table there is
this module's output against a running gateway:

    python -m tests.fuzz.bad_inputs --target localhost:50051 > /tmp/table.md
"""

from __future__ import annotations

import argparse
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import provenance_pb2 as provenance_pb
from genmedia.v1 import text_generation_pb2 as text_pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
OK = grpc.StatusCode.OK
TIMEOUT_S = 60.0


def picture(width: int = 40, height: int = 30, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        wide = np.asarray(image.convert("L"), dtype="<u2") * 257
        return Image.frombytes("I;16", image.size, wide.tobytes())
    return image.convert(mode)


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height`: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def animated_webp() -> bytes:
    frames = [picture(), picture().rotate(180)]
    return encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:])


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 30 x 40 on screen
    return encoded(picture(40, 32), "JPEG", exif=exif)


@dataclass(frozen=True)
class Case:
    area: str
    description: str
    rpc: str
    payload: Callable[[], bytes]
    expected: grpc.StatusCode
    check: Callable[[bytes], str] | None = None
    """For OK answers: a short description of the response, checked by the test."""


def translate(image: bytes, **fields: object) -> Callable[[], bytes]:
    return lambda: trans_pb.TranslateImageRequest(
        image=image, model="horse2zebra", **fields
    ).SerializeToString()


def generate(*names: str, **fields: object) -> Callable[[], bytes]:
    classes = [gen_pb.ClassSelector(name=name) for name in names]
    return lambda: gen_pb.GenerateImagesRequest(classes=classes, **fields).SerializeToString()


def text(prompt: str = "Deep fakes", **fields: object) -> Callable[[], bytes]:
    return lambda: text_pb.GenerateTextRequest(
        prompt=prompt, max_new_tokens=fields.pop("max_new_tokens", 4), **fields
    ).SerializeToString()


def translated_size(raw: bytes) -> str:
    image = trans_pb.TranslateImageResponse.FromString(raw).image
    return f"OK, {image.width}x{image.height} image"


def image_count(raw: bytes) -> str:
    return f"OK, {len(gen_pb.GenerateImagesResponse.FromString(raw).images)} images"


def verdict_of(raw: bytes) -> str:
    answer = provenance_pb.VerifyImageResponse.FromString(raw)
    failures = ", ".join(answer.content_credentials.failures)
    return f"OK, {provenance_pb.Verdict.Name(answer.verdict)}" + (
        f" ({failures})" if failures else ""
    )


def large_photo() -> bytes:
    """A 4000 x 4000 PNG (16 megapixels, the verification limit), smooth so it stays small."""
    rng = np.random.default_rng(4000)
    coarse = Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))
    return encoded(coarse.resize((4000, 4000), Image.Resampling.BILINEAR), "PNG", compress_level=1)


FLOOD_BYTES = 32 * 1024 * 1024 - 64
"""Just under the 32 MiB message limit."""


def field_flood(field_key: int) -> Callable[[], bytes]:
    """A message of about 32 MiB holding one varint field 16 million times: valid wire format
    that protobuf would take most of a second to parse on the event loop."""
    return lambda: bytes([field_key, 0x01]) * (FLOOD_BYTES // 2)


def hostile_manifest() -> bytes:
    """A PNG with a validly signed C2PA manifest whose org.genmedia.provenance assertion is
    not genmedia's record (its fields of the wrong types), as a forger might make it."""
    from c2pa import Builder, C2paSignerInfo, Context, Signer

    from services.common.content_credentials import PROVENANCE_ASSERTION
    from services.common.provenance import TRAINED_ALGORITHMIC_MEDIA
    from services.common.signing_keys import development_credentials

    credentials = development_credentials("someone else")
    signer = Signer.from_info(
        C2paSignerInfo("es256", credentials.chain_pem, credentials.key_pem, None)
    )
    created = {"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}
    definition = {
        "claim_generator_info": [{"name": "forger", "version": "1"}],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [created]}},
            {"label": PROVENANCE_ASSERTION, "data": {"seed": {"x": 1}, "created_at": 5}},
        ],
    }
    signed = io.BytesIO()
    context = Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    with Builder(definition, context=context) as builder:
        builder.sign(signer, "image/png", io.BytesIO(encoded(picture(64, 64), "PNG")), signed)
    return signed.getvalue()


def invalid_utf8_prompt() -> bytes:
    return bytes([0x0A, 3, 0xFF, 0xFE, 0x41])  # field 1 (prompt), 3 bytes, not UTF-8


def invalid_utf8_second_class_name() -> bytes:
    """GenerateImagesRequest.classes (field 1) twice; the second's name (field 1) not UTF-8."""
    first = bytes([0x0A, 3]) + b"cat"
    second = bytes([0x0A, 2, 0xC3, 0x28])  # a lead byte without its continuation
    return b"".join(bytes([0x0A, len(part)]) + part for part in (first, second))


CASES = [
    Case("image", "decompression bomb: a 100-byte PNG declaring 100000 x 100000",
         "TranslateImage", translate(png_declaring(100_000, 100_000)), INVALID),
    Case("image", "truncated PNG", "TranslateImage",
         translate(encoded(picture(), "PNG")[:200]), INVALID),
    Case("image", "corrupt JPEG (body overwritten)", "TranslateImage",
         translate(encoded(picture(), "JPEG")[:20] + b"\x00" * 400), INVALID),
    Case("image", "truncated WebP", "TranslateImage",
         translate(encoded(picture(), "WEBP")[:40]), INVALID),
    Case("image", "GIF (a format the API does not name)", "TranslateImage",
         translate(encoded(picture(), "GIF")), INVALID),
    Case("image", "BMP", "TranslateImage", translate(encoded(picture(), "BMP")), INVALID),
    Case("image", "TIFF", "TranslateImage", translate(encoded(picture(), "TIFF")), INVALID),
    Case("image", "animated WebP", "TranslateImage", translate(animated_webp()), INVALID),
    Case("image", "zero bytes", "TranslateImage", translate(b""), INVALID),
    Case("image", "4 x 4 pixels (under 8 a side)", "TranslateImage",
         translate(encoded(picture(4, 4), "PNG")), INVALID),
    Case("image", "16-bit greyscale PNG", "TranslateImage",
         translate(encoded(picture(mode="I;16"), "PNG")), OK, translated_size),
    Case("image", "palette PNG", "TranslateImage",
         translate(encoded(picture(mode="P"), "PNG")), OK, translated_size),
    Case("image", "PNG with alpha", "TranslateImage",
         translate(encoded(picture(mode="RGBA"), "PNG")), OK, translated_size),
    Case("image", "JPEG with EXIF orientation 6 (40 x 32 stored)", "TranslateImage",
         translate(rotated_jpeg()), OK, translated_size),
    Case("image", "unknown output format 99", "TranslateImage",
         translate(encoded(picture(), "PNG"), format=99), INVALID),
    Case("image", "quality 101", "TranslateImage",
         translate(encoded(picture(), "PNG"), format=2, quality=101), INVALID),
    Case("message", "request over the 32 MiB message limit", "TranslateImage",
         translate(b"\x89PNG" + b"\x00" * (33 * 1024 * 1024)), grpc.StatusCode.RESOURCE_EXHAUSTED),
    Case("message", "prompt with invalid UTF-8 (raw wire bytes)", "GenerateText",
         invalid_utf8_prompt, INVALID),
    Case("message", "second class name with invalid UTF-8 (raw wire bytes)", "GenerateImages",
         invalid_utf8_second_class_name, INVALID),
    Case("message", "bytes that are no protobuf message", "GenerateImages",
         lambda: b"\xff\xff\xff\xff", INVALID),
    Case("message", "32 MiB of one field repeated 16 million times (parsing it would stall "
         "the process)", "GenerateText", field_flood(0x10), INVALID),
    Case("message", "the same, to the gateway's own service", "VerifyText",
         field_flood(0x08), INVALID),
    Case("text", "prompt longer than the context", "GenerateText",
         text("deep " * 1100), INVALID),
    Case("text", "... with truncate_prompt", "GenerateText",
         text("deep " * 1100, truncate_prompt=True), OK),
    Case("text", "empty prompt", "GenerateText", text(""), INVALID),
    Case("text", "temperature NaN", "GenerateText", text(temperature=float("nan")), INVALID),
    Case("text", "temperature +infinity", "GenerateText", text(temperature=float("inf")), INVALID),
    Case("text", "temperature -1", "GenerateText", text(temperature=-1.0), INVALID),
    Case("text", "top_p NaN", "GenerateText", text(top_p=float("nan")), INVALID),
    Case("text", "top_p 0", "GenerateText", text(top_p=0.0), INVALID),
    Case("text", "top_k 4294967295", "GenerateText", text(top_k=2**32 - 1), INVALID),
    Case("text", "repetition_penalty -infinity", "GenerateText",
         text(repetition_penalty=float("-inf")), INVALID),
    Case("text", "max_new_tokens 4294967295", "GenerateText",
         text(max_new_tokens=2**32 - 1), INVALID),
    Case("text", "seed -1", "GenerateText", text(seed=-1), INVALID),
    Case("text", "5 stop sequences", "GenerateText", text(stop=["a", "b", "c", "d", "e"]), INVALID),
    Case("images", "no classes", "GenerateImages", generate(), INVALID),
    Case("images", "the same class twice", "GenerateImages",
         generate("goldfish", "goldfish"), OK, image_count),
    Case("images", "an empty class selector", "GenerateImages",
         lambda: gen_pb.GenerateImagesRequest(
             classes=[gen_pb.ClassSelector()]).SerializeToString(), INVALID),
    Case("images", "unknown class name", "GenerateImages", generate("cofee mugg"), INVALID),
    Case("images", "class id 4294967295", "GenerateImages",
         lambda: gen_pb.GenerateImagesRequest(
             classes=[gen_pb.ClassSelector(id=2**32 - 1)]).SerializeToString(), INVALID),
    Case("images", "17 images (over the per-request maximum of 16)", "GenerateImages",
         generate("goldfish", count=17), INVALID),
    Case("images", "3 classes x 6 = 18 images", "GenerateImages",
         generate("goldfish", "tench", "coffee mug", count=6), INVALID),
    Case("images", "truncation NaN", "GenerateImages",
         generate("goldfish", truncation=float("nan")), INVALID),
    Case("images", "truncation -infinity", "GenerateImages",
         generate("goldfish", truncation=float("-inf")), INVALID),
    Case("images", "truncation 1e30", "GenerateImages",
         generate("goldfish", truncation=1e30), INVALID),
    Case("images", "seed -5", "GenerateImages", generate("goldfish", seed=-5), INVALID),
    Case("images", "width 4294967295", "GenerateImages",
         generate("goldfish", width=2**32 - 1), INVALID),
    Case("images", "unknown format 7", "GenerateImages", generate("goldfish", format=7), INVALID),
    Case("images", "ListClasses query of 201 characters", "ListClasses",
         lambda: gen_pb.ListClassesRequest(query="x" * 201).SerializeToString(), INVALID),
    Case("provenance", "VerifyImage with no bytes", "VerifyImage",
         lambda: provenance_pb.VerifyImageRequest().SerializeToString(), INVALID),
    Case("provenance", "VerifyImage of a GIF", "VerifyImage",
         lambda: provenance_pb.VerifyImageRequest(
             data=encoded(picture(), "GIF")).SerializeToString(), INVALID),
    Case("provenance", "VerifyImage of a 4000 x 4000 PNG (16 megapixels, the limit)",
         "VerifyImage", lambda: provenance_pb.VerifyImageRequest(
             data=large_photo()).SerializeToString(), OK, verdict_of),
    Case("provenance", "VerifyImage of a validly signed image whose genmedia provenance "
         "record is forged (hostile C2PA manifest)", "VerifyImage",
         lambda: provenance_pb.VerifyImageRequest(
             data=hostile_manifest()).SerializeToString(), OK, verdict_of),
    Case("provenance", "VerifyText of blank text", "VerifyText",
         lambda: provenance_pb.VerifyTextRequest(text="  \n").SerializeToString(), INVALID),
    Case("provenance", "VerifyText of 100,001 characters", "VerifyText",
         lambda: provenance_pb.VerifyTextRequest(text="x" * 100_001).SerializeToString(),
         INVALID),
]  # fmt: skip

SERVICES = {
    "TranslateImage": "ImageTranslationService",
    "GenerateImages": "ImageGenerationService",
    "ListClasses": "ImageGenerationService",
    "GenerateText": "TextGenerationService",
    "VerifyImage": "ProvenanceService",
    "VerifyText": "ProvenanceService",
}


def answer(channel: grpc.Channel, case: Case) -> tuple[grpc.StatusCode, str]:
    """The status and message (or the response's summary) the case gets."""
    method = channel.unary_unary(f"/genmedia.v1.{SERVICES[case.rpc]}/{case.rpc}")
    try:
        raw = method(case.payload(), timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return OK, case.check(raw) if case.check else "OK"


def markdown(answers: list[tuple[Case, grpc.StatusCode, str]]) -> str:
    lines = ["| input | RPC | status | message |", "|---|---|---|---|"]
    for case, code, message in answers:
        shown = message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {case.description} | {case.rpc} | {code.name} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051", help="the gateway")
    args = parser.parse_args()
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(args.target, options=options) as channel:
        print(markdown([(case, *answer(channel, case)) for case in CASES]))


if __name__ == "__main__":
    main()
