"""GPT-2 forward passes for many sequences at once, over one slot-major key/value cache.

The cache holds `slots` sequences of up to `capacity` positions per layer:
[layers, slots, heads, capacity, head_size]. Running sequences occupy slots
0..n-1 (a sequence that leaves gets the last one moved into its place), so
a decode step attends over a view of the first n slots, not a copy. A
decode step runs the newest token of every running sequence together: the
projections, MLPs, attention and the language-model head each make one
call for the whole batch, and each weight is read once per step however
many sequences share it.

The layers are the loaded GPT2LMHeadModel's own modules (Conv1D, LayerNorm,
MLP), so the arithmetic is Hugging Face's; only the cache layout is ours.

Batch independence: CPU matrix kernels take one code path from four rows up,
and each row's result then depends on that row alone; attention over a
masked span gives the same bits for any span length that is a multiple of
32. So decode steps are padded to at least four rows and attend over a span
rounded up to 64 positions, and a sequence's logits are bit-identical
whatever else shares the step (tests/unit/models/test_gpt2_batching.py).
GPU kernels may be chosen by batch size; there results agree to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from transformers import GPT2LMHeadModel

from genmedia_models.weights import CheckpointError

# Matrix kernels switch code path below this many rows (see the module docstring).
MIN_DECODE_ROWS = 4
# Attention spans are rounded up to this, so their length never changes the bits.
SPAN_MULTIPLE = 64


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass
class DecodeRow:
    """One running sequence in a decode step: its cached length and newest token.

    Rows are passed in slot order: row i is the sequence in slot i.
    """

    length: int
    token: int


class PooledGPT2:
    """Prefill and batched decode for GPT2LMHeadModel over a slot-major KV cache."""

    def __init__(self, model: GPT2LMHeadModel, slots: int, capacity: int | None = None) -> None:
        config = model.config
        if getattr(config, "add_cross_attention", False):
            raise CheckpointError("GPT-2 checkpoints with cross-attention are not supported")
        self.model = model
        self.device = model.device
        self.n_positions = int(config.n_positions)
        self.vocab_size = int(config.vocab_size)
        self.heads = int(config.n_head)
        self.head_size = int(config.n_embd) // self.heads
        transformer = model.transformer
        self.blocks = list(transformer.h)
        base_scale = self.head_size**-0.5 if config.scale_attn_weights else 1.0
        self.scales = [
            base_scale / (layer + 1) if config.scale_attn_by_inverse_layer_idx else base_scale
            for layer in range(len(self.blocks))
        ]
        self.slots = max(slots, MIN_DECODE_ROWS)
        self.capacity = round_up(capacity or self.n_positions, SPAN_MULTIPLE)
        shape = (len(self.blocks), self.slots, self.heads, self.capacity, self.head_size)
        dtype = transformer.wte.weight.dtype
        self.keys = torch.zeros(shape, dtype=dtype, device=self.device)
        self.values = torch.zeros(shape, dtype=dtype, device=self.device)

    def _split_heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[rows, 3 * n_embd] -> query, key, value, each [rows, heads, head_size]."""
        rows = hidden.shape[0]
        return tuple(
            part.view(rows, self.heads, self.head_size)
            for part in hidden.split(self.heads * self.head_size, dim=-1)
        )

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.transformer.ln_f(hidden)).float()

    @torch.inference_mode()
    def prefill(self, slot: int, prompt: Sequence[int]) -> torch.Tensor:
        """Fill `slot` with the prompt's keys and values; returns last-position logits [vocab]."""
        length = len(prompt)
        transformer = self.model.transformer
        ids = torch.tensor(prompt, dtype=torch.long, device=self.device)
        positions = torch.arange(length, device=self.device)
        hidden = transformer.wte(ids) + transformer.wpe(positions)
        for layer, block in enumerate(self.blocks):
            query, key, value = self._split_heads(block.attn.c_attn(block.ln_1(hidden)))
            self.keys[layer, slot, :, :length] = key.transpose(0, 1)
            self.values[layer, slot, :, :length] = value.transpose(0, 1)
            attended = functional.scaled_dot_product_attention(
                query.transpose(0, 1),
                key.transpose(0, 1),
                value.transpose(0, 1),
                is_causal=True,
                scale=self.scales[layer],
            )
            hidden = hidden + block.attn.c_proj(attended.transpose(0, 1).reshape(length, -1))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        return self._logits(hidden[-1:])[0]

    def move(self, source: int, target: int) -> None:
        """Move a sequence's cache from slot `source` to slot `target` (to keep slots dense)."""
        self.keys[:, target] = self.keys[:, source]
        self.values[:, target] = self.values[:, source]

    @torch.inference_mode()
    def decode(self, rows: Sequence[DecodeRow]) -> torch.Tensor:
        """One step for the sequences in slots 0..len(rows)-1; logits [rows, vocab].

        Each row's token goes into its slot's cache at position `length`.
        """
        count = len(rows)
        padded = max(count, MIN_DECODE_ROWS)
        transformer = self.model.transformer
        # Padding rows attend to their slot's position 0 only: finite, and discarded.
        lengths = torch.zeros(padded, dtype=torch.long, device=self.device)
        lengths[:count] = torch.tensor([row.length for row in rows], device=self.device)
        tokens = torch.zeros(padded, dtype=torch.long, device=self.device)
        tokens[:count] = torch.tensor([row.token for row in rows], device=self.device)
        span = min(round_up(max(row.length for row in rows) + 1, SPAN_MULTIPLE), self.capacity)
        visible = torch.arange(span, device=self.device).unsqueeze(0) <= lengths.unsqueeze(1)
        visible[count:, 1:] = False
        mask = visible[:, None, None, :]
        slots = torch.arange(count, device=self.device)
        hidden = transformer.wte(tokens) + transformer.wpe(lengths)
        for layer, block in enumerate(self.blocks):
            query, key, value = self._split_heads(block.attn.c_attn(block.ln_1(hidden)))
            self.keys[layer, slots, :, lengths[:count]] = key[:count]
            self.values[layer, slots, :, lengths[:count]] = value[:count]
            attended = functional.scaled_dot_product_attention(
                query.unsqueeze(2),
                self.keys[layer, :padded, :, :span],
                self.values[layer, :padded, :, :span],
                attn_mask=mask,
                scale=self.scales[layer],
            )
            hidden = hidden + block.attn.c_proj(attended.reshape(padded, -1))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        return self._logits(hidden)[:count]
