import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import common_pb2
from services.common import images
from services.common.errors import InvalidArgument
from services.common.provenance import make_provenance

LIMITS = images.ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000)


def encoded(image: Image.Image, pil_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()


def gradient(width: int = 40, height: int = 30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    return Image.fromarray(np.broadcast_to(x ^ y, (height, width, 3)).copy())


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("pil_format", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_decode_to_rgb(pil_format: str) -> None:
    pixels = images.decode_image(encoded(gradient(), pil_format), LIMITS)
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8


def test_decode_resized_is_decode_then_resize_and_keeps_the_inputs_size() -> None:
    data = encoded(gradient(), "PNG")
    pixels, width, height = images.decode_resized(data, LIMITS, 16)
    assert (width, height) == (40, 30)
    assert np.array_equal(pixels, images.resize(images.decode_image(data, LIMITS), 16, 16))
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        images.decode_resized(data[:60], LIMITS, 16)


def test_provenance_is_stamped_with_the_current_time() -> None:
    before = time.time()
    stamped = make_provenance("m", "1", 0, "r").created_at.ToNanoseconds() / 1e9
    assert before <= stamped <= time.time()


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        images.decode_image(b"", LIMITS)


def test_corrupt_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a PNG, JPEG or WebP"):
        images.decode_image(b"definitely not an image", LIMITS)


@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n garbage", b"RIFF\x00\x00\x00\x00WEBPVP8 "], ids=["png", "webp"]
)
def test_valid_signature_with_a_corrupt_header_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        images.decode_image(data, LIMITS)


def test_truncated_png_is_refused() -> None:
    data = encoded(gradient(200, 200), "PNG")
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        images.decode_image(data[: len(data) // 2], LIMITS)


def test_formats_the_api_does_not_name_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a PNG, JPEG or WebP"):
        images.decode_image(encoded(gradient(), "GIF"), LIMITS)
    with pytest.raises(InvalidArgument, match="not a PNG, JPEG or WebP"):
        images.decode_image(encoded(gradient(), "BMP"), LIMITS)


def test_declared_size_over_the_pixel_limit_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidArgument, match="pixels"):
        images.decode_image(png_declaring(50_000, 50_000), LIMITS)
    with pytest.raises(InvalidArgument, match="the limit is 1000000 pixels"):
        images.decode_image(png_declaring(2000, 1000), LIMITS)


def test_byte_limit_is_stated() -> None:
    small = images.ImageLimits(max_bytes=10, max_pixels=1_000_000)
    with pytest.raises(InvalidArgument, match="the limit is 10 bytes"):
        images.decode_image(encoded(gradient(), "PNG"), small)


def test_tiny_images_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="at least 8 pixels"):
        images.decode_image(encoded(gradient(4, 4), "PNG"), LIMITS)


def test_animated_images_are_refused() -> None:
    frames = [gradient(), gradient().rotate(180)]
    data = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidArgument, match="animated"):
        images.decode_image(data, LIMITS)


@pytest.mark.parametrize(
    "image",
    [
        gradient().convert("P"),
        gradient().convert("RGBA"),
        gradient().convert("L"),
        Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50),
    ],
    ids=["palette", "alpha", "grey", "16-bit"],
)
def test_other_modes_become_rgb(image: Image.Image) -> None:
    pixels = images.decode_image(encoded(image, "PNG"), LIMITS)
    assert pixels.shape == (30, 40, 3)


def test_exif_orientation_is_honoured() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encoded(gradient(40, 30), "JPEG", exif=exif)
    assert images.decode_image(data, LIMITS).shape == (40, 30, 3)


@pytest.mark.parametrize(
    "image_format",
    [common_pb2.IMAGE_FORMAT_PNG, common_pb2.IMAGE_FORMAT_JPEG, common_pb2.IMAGE_FORMAT_WEBP],
)
def test_encoded_images_carry_provenance(image_format: int) -> None:
    provenance = make_provenance("biggan", "1", 42, "req-1")
    result = images.encode_image(
        np.asarray(gradient()), provenance, images.EncodeOptions(image_format)
    )
    assert (result.width, result.height, result.format) == (40, 30, image_format)
    embedded = json.loads(images.read_embedded_provenance(result.data) or "{}")
    assert embedded["synthetic"] is True
    assert embedded["model"] == "biggan" and embedded["seed"] == 42
    assert embedded["request_id"] == "req-1"
    assert embedded["digital_source_type"].endswith("trainedAlgorithmicMedia")
    decoded = Image.open(io.BytesIO(result.data))
    assert decoded.format == images.format_name(image_format).upper()


def test_unspecified_output_format_is_png() -> None:
    provenance = make_provenance("biggan", "1", 1, "r")
    result = images.encode_image(
        np.asarray(gradient()),
        provenance,
        images.EncodeOptions(common_pb2.IMAGE_FORMAT_UNSPECIFIED),
    )
    assert result.format == common_pb2.IMAGE_FORMAT_PNG and result.data.startswith(b"\x89PNG")


def test_bad_output_options_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="quality"):
        images.validate_output_format(common_pb2.IMAGE_FORMAT_JPEG, 101)
    with pytest.raises(InvalidArgument, match="format 9 is unknown"):
        images.validate_output_format(9, 0)
