"""GPT-2 demo model: a small GPT2LMHeadModel trained on the standard library's docstrings.

English text that every Python installation ships, with no download: the
module, class and function docstrings of the standard library, read with
`ast` (nothing is imported), cleaned with `inspect.cleandoc`, deduplicated,
and split into training and held-out documents by module, so held-out text
comes from modules the model never saw. A byte-level BPE tokenizer (Hugging
Face `tokenizers`, GPT-2's pre-tokenizer and decoder) is trained on the
training documents only; `<|endoftext|>` separates documents and is the bos
and eos token. The model is a standard Hugging Face GPT2LMHeadModel, written
as the usual directory (config.json, model.safetensors,
generation_config.json, tokenizer.json, vocab.json, merges.txt,
tokenizer_config.json) that `genmedia_models.gpt2.load_gpt2` and the text
service read.

Quality: held-out perplexity of the model against that of a unigram model
(add-one smoothing, fitted on the training tokens), on the same held-out
token stream.

    python -m tools.training.gpt2_docstrings --out var/demo/gpt2
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import inspect
import itertools
import math
import os
import re
import sysconfig
import time
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer, Tokenizer
from tqdm import tqdm
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

from genmedia_models.gpt2.batching import generate_one
from genmedia_models.gpt2.loading import eos_token_ids, load_gpt2, save_tokenizer_files
from genmedia_models.gpt2.sampling import SamplingParams
from tools.training.pacing import steps_that_fit
from tools.training.report import QualityReport, TrainingReport

MODEL_NAME = "gpt2-docstrings"
END_OF_TEXT = "<|endoftext|>"
TARGET_RATIO = 0.50
HELDOUT_PERCENT = 10
# Part of the split hash; changing it reshuffles which modules are held out.
# Picked among the first few candidates as the one whose held-out side is
# closest to 10% of the text (55 modules, none of the few giant ones).
SPLIT_SALT = "genmedia-docstrings-v2"

# Not English prose, or not the standard library proper: third-party packages,
# test suites (whose docstrings describe test cases), IDLE and the turtle demos,
# and the generated codec modules whose docstrings differ only in a codec name.
SKIPPED_DIRECTORIES = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "encodings",
        "__pycache__",
    }
)
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Document:
    """One docstring and the module it came from."""

    module: str
    """Path of the source file relative to the stdlib directory, e.g. "email/message.py"."""
    text: str


@dataclass(frozen=True)
class Corpus:
    train: tuple[Document, ...]
    heldout: tuple[Document, ...]


@dataclass(frozen=True)
class Gpt2DocstringsConfig:
    """Everything that shapes a run; defaults fit the demo pack's CPU budget."""

    vocab_size: int = 2048
    n_positions: int = 512
    n_embd: int = 128
    n_layer: int = 3
    n_head: int = 4
    dropout: float = 0.0
    sequence_length: int = 256
    batch_size: int = 8
    long_every: int = 4
    """Every this many steps, one batch of full-context windows (same token count), so that
    positions past sequence_length are trained too; 0 = never."""
    steps: int = 900
    lr: float = 6e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0


def looks_english(text: str) -> bool:
    """True for prose in Latin letters: a few words, mostly letters, hardly any other script.

    Drops the stdlib's symbols-only and one-word docstrings ("¶", "π",
    "microseconds"), other scripts, and docstrings that are mostly code.
    """
    words = _WORD.findall(text)
    if len(words) < 3:
        return False
    latin = sum(map(len, words))
    letters = sum(character.isalpha() for character in text)
    visible = sum(not character.isspace() for character in text)
    return latin >= 0.95 * letters and latin >= 0.5 * visible


_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _definitions(node: ast.AST) -> Iterable[ast.AST]:
    """Classes and functions under `node`, at any depth, in source order.

    Only statements are descended into: expressions hold no docstrings, and
    skipping them makes the scan several times faster than ast.walk.
    """
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            if isinstance(child, _DEFINITIONS):
                yield child
            yield from _definitions(child)


def _docstrings(path: Path) -> Iterable[str]:
    """Module, class and function docstrings of one source file, cleaned, in source order."""
    try:
        with tokenize.open(path) as source:  # honours coding cookies
            tree = ast.parse(source.read(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in (tree, *_definitions(tree)):
        text = ast.get_docstring(node, clean=False)
        if text:
            yield inspect.cleandoc(text).strip()


def _source_files(root: Path) -> list[Path]:
    """The stdlib's .py files, sorted; skipped directories are pruned, not walked."""
    files: list[Path] = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if name not in SKIPPED_DIRECTORIES]
        files += [
            Path(directory, name)
            for name in names
            if name.endswith(".py") and not name.startswith("test_")
        ]
    return sorted(files)


@functools.cache
def stdlib_docstrings(stdlib: Path | None = None) -> tuple[Document, ...]:
    """Every English-looking docstring of the standard library, deduplicated, in path order."""
    root = stdlib or Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    documents: list[Document] = []
    for path in _source_files(root):
        for text in _docstrings(path):
            if text in seen or not looks_english(text):
                continue
            seen.add(text)
            documents.append(Document(path.relative_to(root).as_posix(), text))
    return tuple(documents)


def is_heldout(module: str) -> bool:
    """The module's fixed side of the split: a stable hash, not Python's salted hash()."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{module}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


def build_corpus(max_documents: int | None = None) -> Corpus:
    """Training and held-out documents; `max_documents` caps each side (for quick tests)."""
    documents = stdlib_docstrings()
    train = tuple(d for d in documents if not is_heldout(d.module))
    heldout = tuple(d for d in documents if is_heldout(d.module))
    if max_documents is not None:
        train, heldout = train[:max_documents], heldout[:max_documents]
    return Corpus(train, heldout)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> ByteLevelBPETokenizer:
    """GPT-2's byte-level BPE: every byte is in the base alphabet, so any text round-trips."""
    tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
    tokenizer.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    return tokenizer


def token_stream(
    tokenizer: Tokenizer | ByteLevelBPETokenizer, texts: Sequence[str]
) -> torch.Tensor:
    """All documents as one int64 stream, each one preceded by <|endoftext|>, plus a final one.

    Documents are encoded separately and joined by id, so no text can be
    mistaken for the separator.
    """
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    ids = [end_of_text]
    for encoding in tokenizer.encode_batch(list(texts)):
        ids.extend(encoding.ids)
        ids.append(end_of_text)
    return torch.tensor(ids, dtype=torch.long)


def _learning_rate(step: int, total: int, config: Gpt2DocstringsConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_fraction + (1.0 - config.min_lr_fraction) * cosine)


def _optimizer(model: GPT2LMHeadModel, config: Gpt2DocstringsConfig) -> torch.optim.AdamW:
    # Decay matrices only: biases, LayerNorm gains and position tables stay undecayed.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wpe" not in n)]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def train(
    out_dir: Path,
    seed: int = 0,
    max_seconds: float = 240.0,
    steps: int | None = None,
    config: Gpt2DocstringsConfig | None = None,
    max_documents: int | None = None,
) -> TrainingReport:
    """Build the corpus, train tokenizer and model, write the Hugging Face directory to out_dir.

    A fixed step count keeps runs reproducible; `max_seconds` only guards
    against a much slower machine (training stops early, the report says so).
    """
    config = config or Gpt2DocstringsConfig()
    total_steps = config.steps if steps is None else steps
    started = time.monotonic()
    corpus = build_corpus(max_documents)
    texts = [document.text for document in corpus.train]
    tokenizer = train_tokenizer(texts, config.vocab_size)
    stream = token_stream(tokenizer, texts)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)

    torch.manual_seed(seed)
    sampler = torch.Generator().manual_seed(seed)
    model_config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        # GPT-2's tanh GELU as one fused kernel instead of five elementwise ops.
        activation_function="gelu_pytorch_tanh",
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
    )
    model = GPT2LMHeadModel(model_config)
    model.train()
    optimizer = _optimizer(model, config)
    # (window length, windows per batch): mostly short windows, whose attention is
    # cheaper (docstrings are short), and now and then full-context ones.
    short = min(config.sequence_length, config.n_positions, len(stream) - 1)
    full = min(config.n_positions, len(stream) - 1)
    shapes = [(short, config.batch_size), (full, max(1, config.batch_size * short // full))]

    planned = total_steps
    step, loss_value, recent = 0, float("nan"), []
    progress = tqdm(total=planned, desc=MODEL_NAME, unit="step")
    loop_started = time.monotonic()
    while step < planned:
        elapsed = time.monotonic() - started
        if elapsed > max_seconds:
            break  # last resort; the re-planning below normally finishes in time
        planned = steps_that_fit(
            step, total_steps, max_seconds, elapsed, time.monotonic() - loop_started
        )
        progress.total = planned
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, planned, config)
        long_step = config.long_every > 0 and step % config.long_every == config.long_every - 1
        length, rows = shapes[long_step]
        starts = torch.randint(len(stream) - length, (rows, 1), generator=sampler)
        windows = stream[starts + torch.arange(length + 1)]
        logits = model(input_ids=windows[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        progress.update()
        recent = [*recent[-19:], loss.item()]
        loss_value = sum(recent) / len(recent)
        if step % 10 == 0:
            progress.set_postfix(loss=f"{loss_value:.3f}")
    progress.close()
    seconds = time.monotonic() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=end_of_text, eos_token_id=end_of_text, pad_token_id=end_of_text
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer_files(tokenizer, out_dir, END_OF_TEXT, config.n_positions)

    details = {key: str(value) for key, value in asdict(config).items()}
    details.update(
        {
            "planned_steps": str(total_steps),
            "replanned_steps": str(planned),
            "stopped_early": str(step < total_steps),
            "seed": str(seed),
            "torch_threads": str(torch.get_num_threads()),
            "final_train_loss": f"{loss_value:.4f} (mean of the last {len(recent)} steps)",
            "optimiser": (
                f"AdamW(lr {config.lr}, betas (0.9, 0.95), weight decay {config.weight_decay}), "
                f"{config.warmup_steps} warm-up steps, cosine to {config.min_lr_fraction} x lr"
            ),
            "tokens_per_step": str(config.batch_size * short),
        }
    )
    return TrainingReport(
        model=MODEL_NAME,
        architecture=(
            f"GPT-2 (transformers GPT2LMHeadModel), {config.n_layer} layers, "
            f"{config.n_embd} wide, {config.n_head} heads, context {config.n_positions}, "
            f"byte-level BPE vocabulary {tokenizer.get_vocab_size()}"
        ),
        dataset=(
            f"Python {sysconfig.get_python_version()} standard-library docstrings: "
            f"{len(corpus.train)} training documents from "
            f"{len({d.module for d in corpus.train})} modules, {len(stream)} tokens "
            f"({len(corpus.heldout)} documents of "
            f"{len({d.module for d in corpus.heldout})} other modules held out)"
        ),
        resolution=0,
        steps=step,
        seconds=seconds,
        parameters=sum(p.numel() for p in model.parameters()),
        details=details,
    )


@torch.inference_mode()
def model_negative_log_likelihood(
    model: GPT2LMHeadModel, stream: torch.Tensor, stride: int | None = None, batch_size: int = 8
) -> float:
    """Summed natural-log loss of stream[1:], each token predicted once from earlier tokens.

    Windows of the full context slide by half a context, and only tokens not
    scored before are counted, so every token after the first window sees at
    least half a context of history. Windows of equal length run batched.
    """
    window = model.config.n_positions
    stride = stride or window // 2
    spans: list[tuple[int, int, int]] = []  # (begin, end, first target position scored)
    begin, scored_until = 0, 1
    while scored_until < len(stream):
        end = min(begin + window, len(stream))
        spans.append((begin, end, scored_until))
        begin, scored_until = begin + stride, end
    total = 0.0
    for _, same_length in itertools.groupby(spans, key=lambda span: span[1] - span[0]):
        group = list(same_length)
        for first in range(0, len(group), batch_size):
            batch = group[first : first + batch_size]
            inputs = torch.stack([stream[b:e] for b, e, _ in batch])
            log_probs = torch.log_softmax(model(input_ids=inputs).logits[:, :-1].float(), dim=-1)
            losses = -log_probs.gather(2, inputs[:, 1:, None]).squeeze(2)
            for row, (b, _, scored_from) in enumerate(batch):
                # losses[row, i] is the loss of the target at position b + 1 + i.
                total += float(losses[row, scored_from - b - 1 :].sum())
    return total


def unigram_negative_log_likelihood(
    train_stream: torch.Tensor, heldout_stream: torch.Tensor, vocab_size: int
) -> float:
    """Summed natural-log loss of heldout_stream[1:] under add-one-smoothed training frequencies."""
    counts = torch.bincount(train_stream[1:], minlength=vocab_size).double() + 1.0
    log_probs = torch.log(counts / counts.sum())
    return float(-log_probs[heldout_stream[1:]].sum())


def evaluate(out_dir: Path, max_documents: int | None = None) -> QualityReport:
    """Held-out perplexity of the model and of a unigram baseline, on the same tokens."""
    corpus = build_corpus(max_documents)
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    train_stream = token_stream(tokenizer, [d.text for d in corpus.train])
    heldout_stream = token_stream(tokenizer, [d.text for d in corpus.heldout])
    model = load_gpt2(out_dir)
    count = len(heldout_stream) - 1
    model_ppl = math.exp(model_negative_log_likelihood(model, heldout_stream) / count)
    unigram_ppl = math.exp(
        unigram_negative_log_likelihood(train_stream, heldout_stream, model.config.vocab_size)
        / count
    )
    ratio = model_ppl / unigram_ppl
    figures = {
        "heldout_perplexity": model_ppl,
        "unigram_perplexity": unigram_ppl,
        "perplexity_ratio": ratio,
        "heldout_tokens": float(count),
    }
    method = (
        f"Held-out text: the {len(corpus.heldout)} docstrings of the "
        f"{len({d.module for d in corpus.heldout})} standard-library modules the split "
        f"(sha256 of the module path, {HELDOUT_PERCENT}%) kept out of training, tokenised with "
        "the model's tokenizer.json into one stream, each document preceded by <|endoftext|> "
        f"and one at the end; all {count} tokens after the first are scored. The model "
        f"reads windows of its {model.config.n_positions}-token context sliding by half a "
        "context, each token scored once. The baseline is a unigram model of the training "
        "tokens with add-one smoothing over the whole vocabulary. perplexity_ratio is "
        "heldout_perplexity / unigram_perplexity: how much better than word frequencies alone "
        "the model predicts text from modules it never saw."
    )
    return QualityReport(
        figures=figures,
        targets={"perplexity_ratio": f"<= {TARGET_RATIO:.2f}"},
        passed=ratio <= TARGET_RATIO,
        method=method,
    )


def sample_text(
    out_dir: Path,
    prompt: str = "Return the",
    max_new_tokens: int = 60,
    seed: int = 0,
    temperature: float = 0.8,
    top_k: int = 40,
) -> str:
    """The continuation of `prompt`, sampled by the code Triton runs, decoded as served."""
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    model = load_gpt2(out_dir)
    stops = eos_token_ids(model)
    params = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed
    )
    tokens = list(generate_one(model, tokenizer.encode(prompt).ids, params, stops))
    return tokenizer.decode([token for token in tokens if token not in stops])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    report = train(args.out, seed=args.seed, max_seconds=args.max_seconds)
    print(f"trained {report.steps} steps in {report.seconds:.1f} s ({report.parameters} params)")
    print(f"dataset: {report.dataset}")
    for key, value in report.details.items():
        print(f"  {key}: {value}")
    quality = evaluate(args.out)
    for name, value in quality.figures.items():
        print(f"{name}: {value:.4g}  (target {quality.targets.get(name, '-')})")
    print("passed" if quality.passed else "FAILED")
    sizes = {path.name: path.stat().st_size for path in sorted(args.out.iterdir())}
    print(f"files: {sum(sizes.values())} bytes: {sizes}")
    prompt = "Return the"
    print(f"sample: {prompt}{sample_text(args.out, prompt)!s}")


if __name__ == "__main__":
    main()
