"""The README's video demo: handwritten digits (never seen in training) one after another,
translated by TranslateVideo through a real stack, as an input | output GIF.

    python -m tools.demo_video                        # starts the demo stack itself
    python -m tools.demo_video --target HOST:PORT     # a stack already running (make run)

Writes docs/demo/cyclegan-video.gif (and keeps the MP4s beside it with --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import grpc
import numpy as np
from PIL import Image
from tqdm import tqdm

from genmedia.v1 import image_translation_pb2 as pb
from genmedia.v1 import image_translation_pb2_grpc as pb_grpc
from genmedia.v1 import provenance_pb2, provenance_pb2_grpc
from genmedia_shared.paths import REPO_ROOT
from services.common.registry import GATEWAY
from services.launcher.stack import Stack, StackPorts
from tools.video_files import write_video

SIDE = 128
"""Frame side: the 32-pixel digits at 4x, large enough to carry the watermark."""
RATE = 10
HOLD, FADE = 6, 4
"""Frames each digit is held, and frames of the cross-fade to the next."""
MODEL = "handwritten2typeset"
GIF = REPO_ROOT / "docs" / "demo" / "cyclegan-video.gif"


def digit_frames(seed: int = 3) -> list[np.ndarray]:
    """One unseen handwritten digit per class, 0..9, held and cross-faded: RGB uint8."""
    from tools.training import digits  # scikit-learn: only this tool needs it

    held = digits.handwritten_digits("heldout")
    rng = np.random.default_rng(seed)
    picks = [held.images[rng.choice(np.flatnonzero(held.labels == d))] for d in range(10)]
    large = [np.asarray(Image.fromarray(p * 255).convert("L").resize((SIDE, SIDE))) for p in picks]
    frames: list[np.ndarray] = []
    for current, following in zip(large, [*large[1:], large[0]], strict=True):
        frames += [current] * HOLD
        for step in range(1, FADE + 1):
            mix = step / (FADE + 1)
            frames.append(((1 - mix) * current + mix * following).astype(np.uint8))
    return [np.repeat(frame[..., None], 3, axis=-1) for frame in frames]


def translate_file(
    channel: grpc.Channel, source: Path, target: Path, model: str = MODEL
) -> pb.VideoSummary:
    stub = pb_grpc.ImageTranslationServiceStub(channel)

    def requests() -> Iterator[pb.TranslateVideoRequest]:
        yield pb.TranslateVideoRequest(config=pb.VideoConfig(model=model))
        yield pb.TranslateVideoRequest(chunk=source.read_bytes())

    summary = None
    with target.open("wb") as out, tqdm(unit="frame", desc="translating") as bar:
        for answer in stub.TranslateVideo(requests(), timeout=300):
            kind = answer.WhichOneof("item")
            if kind == "progress":
                bar.total = answer.progress.frames_total
                bar.update(answer.progress.frames_done - bar.n)
            elif kind == "chunk":
                out.write(answer.chunk)
            else:
                summary = answer.summary
    assert summary is not None, "TranslateVideo ended without its summary"
    return summary


def side_by_side_gif(source: Path, translated: Path, gif: Path, every: int = 2) -> int:
    """Input | output, every ``every``-th frame, as a looping GIF; returns its frame count."""
    pairs = []
    with av.open(str(source)) as left, av.open(str(translated)) as right:
        for index, (a, b) in enumerate(
            zip(left.decode(video=0), right.decode(video=0), strict=True)
        ):
            if index % every == 0:
                pairs.append(np.concatenate([a.to_ndarray(format="rgb24"),
                                             b.to_ndarray(format="rgb24")], axis=1))  # fmt: skip
    pictures = [
        Image.fromarray(pair).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        for pair in pairs
    ]
    gif.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(
        gif, save_all=True, append_images=pictures[1:], duration=1000 * every // RATE, loop=0
    )
    return len(pictures)


@contextlib.contextmanager
def demo_gateway(target: str | None, scratch: Path) -> Iterator[str]:
    if target is not None:
        yield target
        return
    stack = Stack(
        weights_dir=REPO_ROOT / "models" / "demo", work_dir=scratch, ports=StackPorts.free()
    )
    stack.start(timeout_s=300)
    try:
        yield stack.ports.address(GATEWAY)
    finally:
        stack.stop()


def make(
    target: str | None, gif: Path, keep: Path | None = None, model: str = MODEL
) -> provenance_pb2.VerifyVideoResponse:
    with tempfile.TemporaryDirectory(prefix="genmedia-demo-video-") as scratch:
        folder = keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        source = write_video(folder / "digits.mp4", digit_frames(), RATE, audio=False)
        with (
            demo_gateway(target, Path(scratch) / "stack") as address,
            grpc.insecure_channel(address) as channel,
        ):
            summary = translate_file(channel, source, folder / "digits-typeset.mp4", model)
            checked = provenance_pb2_grpc.ProvenanceServiceStub(channel).VerifyVideo(
                provenance_pb2.VerifyVideoRequest(
                    data=(folder / "digits-typeset.mp4").read_bytes()
                ),
                timeout=60,
            )
        frames = side_by_side_gif(source, folder / "digits-typeset.mp4", gif)
    verdict = provenance_pb2.Verdict.Name(checked.verdict).removeprefix("VERDICT_")
    print(
        f"{summary.frames} frames translated; {gif} ({frames} frames, {gif.stat().st_size} bytes)"
    )
    print(f"VerifyVideo on the translated MP4: {verdict}: {checked.explanation}")
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="a running gateway; default: start the demo stack")
    parser.add_argument("--gif", type=Path, default=GIF)
    parser.add_argument("--keep", type=Path, help="keep the input and translated MP4s here")
    args = parser.parse_args()
    make(args.target, args.gif, args.keep)


if __name__ == "__main__":
    main()
