"""Image decoding, validation, resizing and encoding with Pillow.

Inputs are checked before any pixel is decoded (format, declared size), so
a decompression bomb or an unexpected format costs nothing. Outputs carry
their provenance inside the file: a PNG text chunk and EXIF fields for
every format.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from genmedia.v1 import common_pb2
from services.common import image_watermark
from services.common.content_credentials import MIME_TYPES, ContentCredentials, SourceImage
from services.common.errors import InvalidArgument
from services.common.provenance import provenance_json

# Only the formats the API names are ever opened.
_PIL_FORMATS = {
    common_pb2.IMAGE_FORMAT_PNG: "PNG",
    common_pb2.IMAGE_FORMAT_JPEG: "JPEG",
    common_pb2.IMAGE_FORMAT_WEBP: "WEBP",
}
PROVENANCE_PNG_KEY = "genmedia:provenance"
_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131
DEFAULT_QUALITY = 90


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    min_side: int = 8


def format_name(image_format: int) -> str:
    return common_pb2.ImageFormat.Name(image_format).removeprefix("IMAGE_FORMAT_").lower()


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Opens PNG/JPEG/WebP bytes and checks them against the limits from the header alone,
    before any pixel is decoded."""
    if not data:
        raise InvalidArgument("image is empty: send PNG, JPEG or WebP bytes")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"image is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    try:
        # Only the header is read here; the explicit pixel check below runs
        # before any decoding (Pillow's own bomb check is a coarser backstop).
        image = Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS.values()))
    except UnidentifiedImageError:
        raise InvalidArgument(
            "image bytes are not a PNG, JPEG or WebP file (or are corrupt)"
        ) from None
    except Image.DecompressionBombError:
        raise InvalidArgument(
            f"image declares more than {limits.max_pixels} pixels; send a smaller image"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"image header is truncated or corrupt: {exc}") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels"
        )
    if min(width, height) < limits.min_side:
        raise InvalidArgument(
            f"image is {width}x{height}; both sides must be at least {limits.min_side} pixels"
        )
    if getattr(image, "n_frames", 1) > 1:
        raise InvalidArgument("animated images are not supported; send a single frame")
    return image


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decodes PNG/JPEG/WebP bytes into an RGB uint8 array of shape [H, W, 3]."""
    image = open_image(data, limits)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"image is truncated or corrupt: {exc}") from None
    return np.asarray(_to_rgb(image), dtype=np.uint8)


def decode_resized(data: bytes, limits: ImageLimits, side: int) -> tuple[np.ndarray, int, int]:
    """Decodes and resizes to ``side`` x ``side`` in one go (one thread hand-off, not two):
    the pixels and the input's own width and height."""
    pixels = decode_image(data, limits)
    height, width = pixels.shape[:2]
    return resize(pixels, side, side), width, height


def decode_centre(data: bytes, limits: ImageLimits, side: int) -> np.ndarray:
    """The centred ``side`` x ``side`` RGB pixels of an image, as stored (no EXIF rotation):
    the full decode is released at once, so a large image costs one decode, not copies."""
    image = open_image(data, limits)
    width, height = image.size
    left, top = max(0, (width - side) // 2), max(0, (height - side) // 2)
    try:
        image.load()
        window = image.crop((left, top, min(width, left + side), min(height, top + side)))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"image is truncated or corrupt: {exc}") from None
    finally:
        image.close()
    return np.asarray(_to_rgb(window), dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: palette, grey, 16-bit and alpha images included."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.uint32) >> 8
        image = Image.fromarray(array.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resizes an [H, W, 3] array with a high-quality filter."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image)


@dataclass(frozen=True)
class EncodeOptions:
    """How a service writes its images: the request's format and quality, the service's
    signer and watermark key. Built once per request and shared by its images."""

    image_format: int = common_pb2.IMAGE_FORMAT_UNSPECIFIED
    """An ImageFormat; unspecified is PNG."""
    quality: int = 0
    """JPEG/WebP quality 1..100; 0 for DEFAULT_QUALITY."""
    credentials: ContentCredentials | None = None
    """Signs each image's Content Credentials; None: unsigned."""
    watermark_key: str | None = None
    """Marks the pixels with the invisible watermark first; None: unmarked."""


PLAIN = EncodeOptions()
"""PNG, unsigned, unmarked."""


def encode_image(
    pixels: np.ndarray,
    provenance: common_pb2.Provenance,
    options: EncodeOptions = PLAIN,
    source: SourceImage | None = None,
) -> common_pb2.Image:
    """Encodes an [H, W, 3] uint8 array with its provenance embedded, then signs it
    with Content Credentials (``source``: the input a translation started from); with
    a watermark key, the pixels get the invisible watermark first."""
    image_format = options.image_format or common_pb2.IMAGE_FORMAT_PNG
    if options.watermark_key is not None:
        pixels = image_watermark.embed(pixels, options.watermark_key)
    label = provenance_json(provenance)
    image = Image.fromarray(pixels, mode="RGB")
    exif = Image.Exif()
    exif[_EXIF_IMAGE_DESCRIPTION] = label
    exif[_EXIF_SOFTWARE] = provenance.generator
    buffer = io.BytesIO()
    pil_format = _PIL_FORMATS[image_format]
    if pil_format == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_itxt(PROVENANCE_PNG_KEY, label)
        image.save(buffer, "PNG", pnginfo=text, exif=exif)
    else:
        image.save(buffer, pil_format, quality=options.quality or DEFAULT_QUALITY, exif=exif)
    data = buffer.getvalue()
    if options.credentials is not None:
        data = options.credentials.sign(data, MIME_TYPES[image_format], provenance, source)
    return common_pb2.Image(
        data=data,
        format=image_format,
        width=image.width,
        height=image.height,
        provenance=provenance,
    )


def resize_and_encode(
    pixels: np.ndarray,
    size: tuple[int, int],
    provenance: common_pb2.Provenance,
    options: EncodeOptions,
    source: SourceImage | None = None,
) -> common_pb2.Image:
    """Resizes to (width, height), marks, encodes and signs: the CPU-heavy tail, in a thread."""
    return encode_image(resize(pixels, *size), provenance, options, source)


def read_embedded_provenance(data: bytes) -> str | None:
    """The provenance JSON embedded by :func:`encode_image`, if any."""
    image = Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS.values()))
    if PROVENANCE_PNG_KEY in getattr(image, "text", {}):
        return image.text[PROVENANCE_PNG_KEY]
    description = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    return str(description) if description else None


def validate_output_format(image_format: int, quality: int) -> None:
    if image_format not in (common_pb2.IMAGE_FORMAT_UNSPECIFIED, *_PIL_FORMATS):
        raise InvalidArgument(
            f"format {image_format} is unknown; use IMAGE_FORMAT_PNG, _JPEG or _WEBP"
        )
    if not 0 <= quality <= 100:
        raise InvalidArgument(f"quality is {quality}; it must be 1..100 (0 for the default)")
