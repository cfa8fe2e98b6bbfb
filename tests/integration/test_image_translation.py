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


def photo(width: int, height: int, pil_format: str = "PNG") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, pil_format)
    return buffer.getvalue()


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


def test_both_directions_and_output_formats(translation) -> None:
    response = translation.TranslateImage(
        pb.TranslateImageRequest(
            image=photo(80, 80), model="zebra2horse", format=common_pb2.IMAGE_FORMAT_WEBP
        ),
        timeout=60,
    )
    assert Image.open(io.BytesIO(response.image.data)).format == "WEBP"


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
