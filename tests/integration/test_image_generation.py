import io
import json

import grpc
import pytest
from PIL import Image

from genmedia.v1 import common_pb2
from genmedia.v1 import image_generation_pb2 as pb
from genmedia.v1 import image_generation_pb2_grpc as pb_grpc
from services.common.images import read_embedded_provenance
from services.common.registry import IMAGE_GENERATION

pytestmark = pytest.mark.integration


@pytest.fixture
def images(connect) -> pb_grpc.ImageGenerationServiceStub:
    return pb_grpc.ImageGenerationServiceStub(connect(IMAGE_GENERATION))


def generate(stub: pb_grpc.ImageGenerationServiceStub, **fields) -> pb.GenerateImagesResponse:
    classes = [pb.ClassSelector(name=n) for n in fields.pop("names", ["coffee", "mushroom"])]
    return stub.GenerateImages(pb.GenerateImagesRequest(classes=classes, **fields), timeout=60)


def test_images_decode_at_the_model_size_with_provenance(images) -> None:
    response = generate(images, seed=1)
    assert [g.image_class.id for g in response.images] == [504, 947]
    for generated in response.images:
        picture = Image.open(io.BytesIO(generated.image.data))
        assert picture.format == "PNG" and picture.size == (128, 128)
        pixels = picture.convert("RGB").getextrema()
        assert any(low != high for low, high in pixels), "image is one flat colour"
        embedded = json.loads(read_embedded_provenance(generated.image.data) or "{}")
        assert embedded["synthetic"] is True and embedded["model"] == "biggan"
        assert embedded["seed"] == 1 and embedded["request_id"] == response.request_id
        assert generated.image.provenance.model_version == "1"


def test_same_seed_gives_identical_bytes_and_another_seed_differs(images) -> None:
    first = generate(images, seed=123, truncation=0.5)
    again = generate(images, seed=123, truncation=0.5)
    other = generate(images, seed=124, truncation=0.5)
    first_pixels = [Image.open(io.BytesIO(g.image.data)).tobytes() for g in first.images]
    again_pixels = [Image.open(io.BytesIO(g.image.data)).tobytes() for g in again.images]
    other_pixels = [Image.open(io.BytesIO(g.image.data)).tobytes() for g in other.images]
    assert first_pixels == again_pixels
    assert first_pixels != other_pixels


def test_requested_size_format_and_count(images) -> None:
    response = generate(
        images,
        names=["goldfish"],
        count=3,
        seed=9,
        width=64,
        height=48,
        format=common_pb2.IMAGE_FORMAT_JPEG,
    )
    assert len(response.images) == 3
    for generated in response.images:
        picture = Image.open(io.BytesIO(generated.image.data))
        assert picture.format == "JPEG" and picture.size == (64, 48)


def test_seed_is_picked_and_returned_when_unset(images) -> None:
    response = generate(images, names=["goldfish"])
    assert response.seed > 0
    assert response.images[0].image.provenance.seed == response.seed


def test_list_classes_filters_by_query(images) -> None:
    response = images.ListClasses(pb.ListClassesRequest(query="coffee"), timeout=10)
    assert [c.name for c in response.classes] == ["coffee mug", "coffeepot"]
    assert response.model == "biggan"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"names": ["cofee mugg"]}, "closest: 'coffee mug'"),
        ({"names": []}, "classes is empty"),
        ({"count": 17}, "count is 17"),
        ({"names": ["goldfish"] * 4, "count": 5}, "at most 16 per request"),
        ({"truncation": 2.0}, "truncation is 2.0"),
        ({"width": 4096}, "width is 4096"),
    ],
)
def test_bad_generation_requests_are_invalid_argument(images, fields, message) -> None:
    with pytest.raises(grpc.RpcError) as error:
        generate(images, **fields)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
