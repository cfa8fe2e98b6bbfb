"""Servicers in process, behind the real interceptor, with a fake Triton."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import aio
from PIL import Image
from prometheus_client import REGISTRY
from tokenizers import Tokenizer

from genmedia.v1 import image_generation_pb2 as gen_pb
from genmedia.v1 import image_generation_pb2_grpc as gen_grpc
from genmedia.v1 import image_translation_pb2 as trans_pb
from genmedia.v1 import image_translation_pb2_grpc as trans_grpc
from genmedia.v1 import text_generation_pb2 as text_pb
from genmedia.v1 import text_generation_pb2_grpc as text_grpc
from services.common.interceptor import ServerCallInterceptor
from services.image_generation.generator import ImageGenerator
from services.image_generation.servicer import ImageGenerationServicer
from services.image_generation.settings import ImageGenerationSettings
from services.image_translation.servicer import ImageTranslationServicer
from services.image_translation.settings import ImageTranslationSettings
from services.image_translation.translator import ImageTranslator
from services.text_generation.generator import TextGenerator, TextModelInfo
from services.text_generation.servicer import TextGenerationServicer
from services.text_generation.settings import TextGenerationSettings
from tests.unit.fakes import FakeTriton


@pytest.fixture
async def channel(
    byte_level_tokenizer: Tokenizer, tmp_path: Path
) -> AsyncIterator[tuple[aio.Channel, FakeTriton]]:
    eos = byte_level_tokenizer.token_to_id("<|endoftext|>")
    tokens = [*byte_level_tokenizer.encode(" deep fakes. END more").ids, eos]
    fake = FakeTriton(tokens=tokens)
    server = aio.server(interceptors=[ServerCallInterceptor()])
    gen_grpc.add_ImageGenerationServiceServicer_to_server(
        ImageGenerationServicer(
            ImageGenerator(
                ImageGenerationSettings(triton_url="fake"),
                fake,  # type: ignore[arg-type]
            )
        ),
        server,
    )
    trans_grpc.add_ImageTranslationServiceServicer_to_server(
        ImageTranslationServicer(
            ImageTranslator(ImageTranslationSettings(triton_url="fake"), fake)  # type: ignore[arg-type]
        ),
        server,
    )
    text_grpc.add_TextGenerationServiceServicer_to_server(
        TextGenerationServicer(
            TextGenerator(
                TextGenerationSettings(triton_url="fake", tokenizer_dir=tmp_path),
                byte_level_tokenizer,
                TextModelInfo(context_length=256, eos_token_ids=frozenset([eos])),
                fake,  # type: ignore[arg-type]
            )
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch, fake
    await server.stop(None)


async def test_unknown_class_is_invalid_argument_with_suggestions(channel) -> None:
    ch, _ = channel
    stub = gen_grpc.ImageGenerationServiceStub(ch)
    request = gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfsh")])
    with pytest.raises(aio.AioRpcError) as error:
        await stub.GenerateImages(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'goldfish'" in error.value.details()


async def test_request_id_is_kept_and_returned(channel) -> None:
    ch, _ = channel
    stub = gen_grpc.ImageGenerationServiceStub(ch)
    request = gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="goldfish")], seed=3)
    call = stub.GenerateImages(request, metadata=(("x-request-id", "abc-123"),))
    response = await call
    assert response.request_id == "abc-123"
    assert ("x-request-id", "abc-123") in tuple(await call.trailing_metadata())
    assert response.images[0].image.provenance.request_id == "abc-123"


async def test_generation_sends_one_hot_classes_and_seeded_noise(channel) -> None:
    ch, fake = channel
    stub = gen_grpc.ImageGenerationServiceStub(ch)
    request = gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(name="coffee"), gen_pb.ClassSelector(id=947)],
        count=2,
        seed=5,
        truncation=0.5,
    )
    response = await stub.GenerateImages(request)
    _, inputs = fake.calls[-1]
    assert inputs["class_vector"].shape == (4, 1000)
    assert list(inputs["class_vector"].argmax(axis=1)) == [504, 504, 947, 947]
    assert np.allclose(inputs["truncation"], 0.5)
    assert [g.image_class.name for g in response.images] == ["coffee mug"] * 2 + ["mushroom"] * 2
    assert response.seed == 5


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"count": 17}, "count is 17"),
        ({"truncation": 1.5}, "truncation is 1.5"),
        ({"width": 5000}, "width is 5000"),
        ({"quality": 500}, "quality is 500"),
    ],
)
async def test_out_of_range_image_fields_are_invalid_argument(
    channel, request_fields: dict, message: str
) -> None:
    ch, _ = channel
    stub = gen_grpc.ImageGenerationServiceStub(ch)
    request = gen_pb.GenerateImagesRequest(
        classes=[gen_pb.ClassSelector(name="goldfish")], **request_fields
    )
    with pytest.raises(aio.AioRpcError) as error:
        await stub.GenerateImages(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


async def test_translation_keeps_the_input_size(channel) -> None:
    ch, _ = channel
    buffer = io.BytesIO()
    Image.new("RGB", (90, 50), (10, 200, 30)).save(buffer, "PNG")
    stub = trans_grpc.ImageTranslationServiceStub(ch)
    response = await stub.TranslateImage(
        trans_pb.TranslateImageRequest(image=buffer.getvalue(), model="horse2zebra")
    )
    assert (response.image.width, response.image.height) == (90, 50)
    assert Image.open(io.BytesIO(response.image.data)).size == (90, 50)


async def test_unknown_translation_model_lists_the_available_ones(channel) -> None:
    ch, _ = channel
    stub = trans_grpc.ImageTranslationServiceStub(ch)
    with pytest.raises(aio.AioRpcError) as error:
        await stub.TranslateImage(trans_pb.TranslateImageRequest(image=b"x", model="cat2dog"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "horse2zebra" in error.value.details()


async def test_stream_concatenation_equals_unary_and_stops_at_the_stop_sequence(channel) -> None:
    ch, fake = channel
    stub = text_grpc.TextGenerationServiceStub(ch)
    request = text_pb.GenerateTextRequest(prompt="About", seed=1, stop=["END"])
    chunks = [chunk async for chunk in stub.StreamText(request)]
    whole = await stub.GenerateText(request)
    assert "".join(c.text for c in chunks) == whole.text == " deep fakes. "
    assert chunks[-1].finish_reason == text_pb.FINISH_REASON_STOP
    assert fake.streams_closed == 2  # the Triton stream is closed at the stop


async def test_end_of_text_token_ends_generation(channel) -> None:
    ch, _ = channel
    stub = text_grpc.TextGenerationServiceStub(ch)
    response = await stub.GenerateText(text_pb.GenerateTextRequest(prompt="About"))
    assert response.text == " deep fakes. END more"
    assert response.finish_reason == text_pb.FINISH_REASON_EOS
    assert response.provenance.synthetic


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"temperature": 2.5}, "temperature is 2.5"),
        ({"top_p": 0.0}, "top_p is 0.0"),
        ({"top_k": 5000}, "top_k is 5000"),
        ({"max_new_tokens": 2000}, "max_new_tokens is 2000"),
        ({"max_new_tokens": 250, "prompt": "word " * 20}, "context of 256 tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
    ],
)
async def test_bad_text_requests_are_invalid_argument(
    channel, request_fields: dict, message: str
) -> None:
    ch, _ = channel
    stub = text_grpc.TextGenerationServiceStub(ch)
    fields = {"prompt": "hello"} | request_fields
    with pytest.raises(aio.AioRpcError) as error:
        await stub.GenerateText(text_pb.GenerateTextRequest(**fields))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_service": "genmedia.v1.ImageGenerationService",
            "grpc_method": method,
            "grpc_type": "unary",
            "grpc_code": code,
            "protocol": "grpc",
        },
    )
    return value or 0.0


async def test_metrics_record_the_status_the_caller_saw(channel) -> None:
    ch, _ = channel
    stub = gen_grpc.ImageGenerationServiceStub(ch)
    before = handled("GenerateImages", "INVALID_ARGUMENT"), handled("ListClasses", "OK")
    with pytest.raises(aio.AioRpcError):
        await stub.GenerateImages(gen_pb.GenerateImagesRequest())
    await stub.ListClasses(gen_pb.ListClassesRequest(query="fish"))
    after = handled("GenerateImages", "INVALID_ARGUMENT"), handled("ListClasses", "OK")
    assert after == (before[0] + 1, before[1] + 1)


async def test_undecodable_request_is_invalid_argument(channel) -> None:
    ch, _ = channel
    raw = ch.unary_unary("/genmedia.v1.TextGenerationService/GenerateText")
    # Field 1 (prompt) as a length-delimited string holding invalid UTF-8.
    with pytest.raises(aio.AioRpcError) as error:
        await raw(b"\x0a\x02\xff\xfe")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "prompt is not valid UTF-8; send strings as UTF-8 text"
    with pytest.raises(aio.AioRpcError) as error:
        await raw(b"\xff\xff\xff\xff")  # not protobuf at all
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in error.value.details()


async def test_class_catalog_follows_the_loaded_model(channel) -> None:
    ch, fake = channel
    fake.parameters["biggan"] = {
        "genmedia_classes": "digits",
        "genmedia_name": "biggan-digits",
        "genmedia_resolution": "32",
        "genmedia_architecture": "BigGAN-deep",
    }
    stub = gen_grpc.ImageGenerationServiceStub(ch)
    listed = await stub.ListClasses(gen_pb.ListClassesRequest())
    assert [c.name for c in listed.classes][:3] == ["zero", "one", "two"]
    assert (listed.model_info.name, listed.model_info.resolution) == ("biggan-digits", 32)
    response = await stub.GenerateImages(
        gen_pb.GenerateImagesRequest(classes=[gen_pb.ClassSelector(name="7")], seed=1)
    )
    assert response.images[0].image_class.name == "seven"
    assert fake.calls[-1][1]["class_vector"].shape == (1, 10)


async def test_translation_directions_are_what_triton_has_loaded(channel) -> None:
    ch, fake = channel
    fake.loaded = ["cyclegan_handwritten2typeset"]
    fake.parameters["cyclegan_handwritten2typeset"] = {"genmedia_resolution": "32"}
    stub = trans_grpc.ImageTranslationServiceStub(ch)
    models = (await stub.ListModels(trans_pb.ListModelsRequest())).models
    assert [(m.name, m.source_domain, m.target_domain) for m in models] == [
        ("handwritten2typeset", "handwritten", "typeset")
    ]
    assert models[0].info.resolution == 32
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40)).save(buffer, "PNG")
    await stub.TranslateImage(
        trans_pb.TranslateImageRequest(image=buffer.getvalue(), model="handwritten2typeset")
    )
    assert fake.calls[-1][1]["image"].shape == (1, 32, 32, 3)  # the model's own resolution
