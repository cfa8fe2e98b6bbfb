import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from genmedia.v1 import common_pb2
from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from services.common.images import read_embedded_provenance
from services.common.registry import IMAGE_TRANSLATION

pytestmark = pytest.mark.integration


@pytest.fixture
def translation(connect) -> pb_grpc.ImageTranslationServiceStub:
    return pb_grpc.ImageTranslationServiceStub(connect(IMAGE_TRANSLATION))


DIRECTIONS = ("horse2zebra", "zebra2horse")
FORMATS = {
    common_pb2.IMAGE_FORMAT_PNG: "PNG",
    common_pb2.IMAGE_FORMAT_JPEG: "JPEG",
    common_pb2.IMAGE_FORMAT_WEBP: "WEBP",
}
# Mean absolute difference per channel, in levels of 0..255. Re-encoding the
# smooth input unchanged as JPEG or WebP moves it by 1 or 2 levels; the test
# pack's generators move it by 50 or more.
CHANGED_LEVELS = 10.0


def photo(width: int, height: int, pil_format: str = "PNG") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, pil_format)
    return buffer.getvalue()


def gradient(width: int, height: int) -> tuple[bytes, np.ndarray]:
    """A smooth PNG (so lossy output formats barely move an unchanged copy) and its pixels."""
    y, x = np.mgrid[0:height, 0:width]
    red, green = x * 255 // (width - 1), y * 255 // (height - 1)
    pixels = np.stack([red, green, (red + green) // 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue(), pixels


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"))


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    assert first.shape == second.shape
    return float(np.abs(first.astype(np.int16) - second.astype(np.int16)).mean())


@pytest.mark.parametrize(
    ("pil_format", "size"), [("PNG", (100, 60)), ("JPEG", (257, 31)), ("WEBP", (64, 64))]
)
def test_translation_returns_an_image_of_the_input_size(translation, pil_format, size) -> None:
    response = translation.TranslateImage(
        pb.TranslateImageRequest(image=photo(*size, pil_format), model="horse2zebra"), timeout=60
    )
    picture = Image.open(io.BytesIO(response.image.data))
    assert picture.size == size == (response.image.width, response.image.height)
    embedded = json.loads(read_embedded_provenance(response.image.data) or "{}")
    assert embedded["model"] == "cyclegan_horse2zebra" and embedded["synthetic"] is True


@pytest.mark.parametrize("model", DIRECTIONS)
def test_translation_changes_the_pixels_of_its_input(translation, model: str) -> None:
    source, pixels = gradient(96, 64)
    response = translation.TranslateImage(
        pb.TranslateImageRequest(image=source, model=model), timeout=60
    )
    output = decoded(response.image.data)
    assert output.shape == pixels.shape
    assert mean_difference(output, pixels) > CHANGED_LEVELS, f"{model} echoed its input"


def test_both_directions_and_output_formats(translation) -> None:
    source, pixels = gradient(80, 80)
    outputs: dict[str, np.ndarray] = {}
    for model in DIRECTIONS:
        for image_format, pil_format in FORMATS.items():
            response = translation.TranslateImage(
                pb.TranslateImageRequest(image=source, model=model, format=image_format),
                timeout=60,
            )
            with Image.open(io.BytesIO(response.image.data)) as picture:
                assert (picture.format, picture.size) == (pil_format, (80, 80)), model
            assert response.image.format == image_format
            embedded = json.loads(read_embedded_provenance(response.image.data) or "{}")
            assert embedded.get("model") == f"cyclegan_{model}", (model, pil_format)
            output = decoded(response.image.data)
            assert mean_difference(output, pixels) > CHANGED_LEVELS, (model, pil_format)
            if pil_format == "PNG":
                outputs[model] = output
    # Each direction is its own generator: one image comes out differently from each.
    assert mean_difference(*outputs.values()) > CHANGED_LEVELS / 2


def test_list_models_reports_ready_directions(translation) -> None:
    models = translation.ListModels(pb.ListModelsRequest(), timeout=10).models
    assert [(m.name, m.source_domain, m.target_domain, m.ready) for m in models] == [
        ("horse2zebra", "horse", "zebra", True),
        ("zebra2horse", "zebra", "horse", True),
    ]


def _huge_png() -> bytes:
    # 5000 x 4000 = 20 megapixels of one colour: compresses to a few KB.
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 4000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "model", "message"),
    [
        (b"", "horse2zebra", "image is empty"),
        (b"\x89PNG\r\n\x1a\n garbage", "horse2zebra", "truncated or corrupt"),
        (b"plain text, not an image", "horse2zebra", "not a PNG, JPEG or WebP"),
        (None, "horse2zebra", "the limit is 16000000 pixels"),
        (b"x", "cat2dog", "unknown model 'cat2dog'"),
        (b"x", "", "model is empty"),
    ],
)
def test_bad_translation_requests_are_invalid_argument(translation, image, model, message) -> None:
    request = pb.TranslateImageRequest(image=_huge_png() if image is None else image, model=model)
    with pytest.raises(grpc.RpcError) as error:
        translation.TranslateImage(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
