"""Per-token log-probs of a causal LM on given token ids, without full-vocabulary logits.

Data flow: trajectory tokens -> [logp] -> ref_logp / scorer_logp (scorer) and policy_logp (loss).
Pure torch; the learner and the scorer call it on their own models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def token_logp(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """Log-prob of each token given the tokens before it, as float32 (B, T).

    input_ids and attention_mask are (B, T), right-padded, mask 1 on real tokens. out[b, j] is
    log softmax(logits[b, j - 1] / temperature)[input_ids[b, j]]; out[:, 0] and padding are 0.
    Gradients flow to the model when grad is enabled.
    """
    batch_size, seq_len = input_ids.shape
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = hidden.last_hidden_state  # (B, T, hidden_size)
    real = attention_mask.bool()
    # Token j is predicted by position j - 1 (PAPER.md §9.2), so the first token of a sequence,
    # BOS or not, has no log-prob; a position has a target only if it and its predecessor are real.
    has_target = real[:, 1:] & real[:, :-1]  # (B, T-1)
    positions = hidden[:, :-1][has_target]  # (N, hidden_size)
    targets = input_ids[:, 1:][has_target]  # (N,)

    head = model.get_output_embeddings()
    # Only `chunk_size` rows of the (N, vocab_size) logits exist at once (PAPER.md §6, memory hot
    # spot); under grad the checkpoint recomputes them in backward instead of keeping every chunk.
    use_checkpoint = torch.is_grad_enabled()
    pieces = []
    for start in range(0, positions.shape[0], chunk_size):
        h, y = positions[start : start + chunk_size], targets[start : start + chunk_size]
        if use_checkpoint:
            pieces.append(checkpoint(_chunk_logp, head, h, y, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logp(head, h, y, temperature))
    logp = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)  # (N,)

    out = hidden.new_zeros((batch_size, seq_len - 1), dtype=torch.float32).masked_scatter(has_target, logp)
    return torch.nn.functional.pad(out, (1, 0))  # (B, T)


def _chunk_logp(head: torch.nn.Module, hidden: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """logit[target] - logsumexp(logits) for (N, hidden_size) hidden states and (N,) targets, in float32."""
    # fp32 before the softmax: bf16 logsumexp over ~1e5 entries loses the digits the ratio needs.
    logits = head(hidden).float() / temperature  # (N, vocab_size)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)  # (N,)


def microbatches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices grouped into microbatches of at most `size` sequences, longest first.

    Sorting by length makes sequences of one microbatch similar in length, so padding is small.
    Ties keep index order, so the result is deterministic.
    """
    if size < 1:
        raise ValueError(f"microbatch size must be >= 1, got {size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + size] for start in range(0, len(order), size)]


def pad(sequences: Sequence[Sequence[int] | np.ndarray], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad token sequences into (input_ids, attention_mask), both long (B, T)."""
    seq_len = max((len(s) for s in sequences), default=0)
    input_ids = torch.full((len(sequences), seq_len), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), seq_len), dtype=torch.long)  # (B, T)
    for row, tokens in enumerate(sequences):
        input_ids[row, : len(tokens)] = torch.tensor(
            np.asarray(tokens), dtype=torch.long
        )  # copies: Arrow memory is read-only
        attention_mask[row, : len(tokens)] = 1
    return input_ids, attention_mask
