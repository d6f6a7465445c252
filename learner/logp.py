"""Per-token log-probs of a causal LM: the one path of the learner, the reference, the PRM and `freelunch score`.

Data flow: trajectory tokens -> [logp] -> ref_logp / scorer_logp (scorer) and policy_logp (loss).

    sequences --plan--> microbatches of whole groups under a token budget
              --pack--> one row per microbatch: a prefix tree, each shared prefix once (learner/README.md, 12)
              --decoder--> hidden states (tree attention mask, positions = depth in the sequence)
              --head at the scored positions only, the family's logit transform, / T, chunked logsumexp-->
              logp of each scored token

It equals log_softmax(model(input_ids).logits / T) at every scored position: `prepare_model` proves that on each
model before it is used, and refuses a model whose logits it would get wrong. Pure torch + numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

# --- the families' logit post-processing (what ForCausalLM.forward does after the LM head) ---
# model_type -> (config attribute, how it applies). Each was read from transformers' own forward.
_SOFTCAP = ("gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "gemma4", "gemma4_text", "vaultgemma")
LOGIT_TRANSFORMS: dict[str, tuple[str, str]] = {
    **{name: ("final_logit_softcapping", "softcap") for name in (*_SOFTCAP, "nanochat")},
    **{name: ("logit_scale", "multiply") for name in ("cohere", "cohere2", "cohere2_moe")},
    **{name: ("logits_scaling", "divide") for name in ("granite", "granitemoe", "granitemoeshared", "granite_swa")},
    "granitemoe_swa": ("logits_scaling", "divide"),
    "minicpm3": ("logits_scaling", "divide"),
    "hyperclovax": ("logits_scaling", "multiply"),
}


class UnsupportedModelError(ValueError):
    """The path would score this model wrong (an unknown logit transform, or layers a tree mask cannot steer)."""


def logit_transform(config) -> Callable[[Tensor], Tensor]:
    """The post-processing the model's own forward applies to the LM head's output, as a function of logits."""
    attribute, kind = LOGIT_TRANSFORMS.get(getattr(config, "model_type", ""), ("", "none"))
    value = getattr(config, attribute, None) if attribute else None
    if value is None:
        return lambda logits: logits
    value = float(value)
    if kind == "softcap":
        return lambda logits: torch.tanh(logits / value) * value
    if kind == "multiply":
        return lambda logits: logits * value
    return lambda logits: logits / value


# --- packing: a microbatch as one row holding a prefix tree ---
@dataclass(frozen=True)
class Pack:
    """One packed row. Node n holds token input_ids[n] at depth position_ids[n]; its subtree is [n, subtree_end[n]).

    Every sequence is the path from the root to one node, so token j of sequence s is node nodes[s][j].
    `scored` lists the nodes whose logp is wanted (each once), `predicted_by` the node whose hidden state
    predicts each (its parent), and `gather[s]` the index into `scored` of each scored token of sequence s.
    """

    input_ids: Tensor  # (1, N) long
    position_ids: Tensor  # (1, N) long
    subtree_end: Tensor  # (N,) long
    scored: Tensor  # (U,) long
    predicted_by: Tensor  # (U,) long
    gather: list[np.ndarray]  # per sequence, (number of its scored tokens,) indices into `scored`
    positions: list[np.ndarray]  # per sequence, the positions j (>= 1) of its scored tokens, ascending
    segments: list[tuple[int, np.ndarray]]  # (first node, its sequence's whole path) for each run of new nodes

    def order(self) -> Tensor:
        """(M,) index into `scored` of every scored token, sequence after sequence: packed_logp(...)[order()]."""
        return torch.from_numpy(np.concatenate(self.gather or [np.zeros(0, np.int64)]))

    def on_scored(self, per_sequence: Sequence[np.ndarray]) -> np.ndarray:
        """(M,) float32: each sequence's (T,) values at its scored tokens, in the order of order()."""
        picked = [np.asarray(v, dtype=np.float32)[p] for v, p in zip(per_sequence, self.positions)]
        return np.concatenate(picked or [np.zeros(0, np.float32)])

    def spread(self, logp: np.ndarray, out: list[np.ndarray]) -> None:
        """Write the (U,) logp of the scored nodes into each sequence's (T,) array `out[s]` at its scored tokens."""
        for row, gather, positions in zip(out, self.gather, self.positions):
            row[positions] = logp[gather]


def pack(sequences: Sequence[np.ndarray], scored: Sequence[np.ndarray] | None = None) -> Pack:
    """Pack sequences into one prefix-tree row; `scored[s]` is a bool (T_s,) mask of the tokens to score
    (None: every token but the first). Position 0 of a sequence has no predecessor and is never scored.

    In lexicographic order a sequence shares the longest prefix with the one just before it, so each new
    sequence adds only its tokens after that common prefix, and every subtree is a contiguous range.
    """
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    order = sorted(range(len(seqs)), key=lambda i: seqs[i].tolist())
    nodes: list[np.ndarray] = [np.zeros(0, np.int64)] * len(seqs)
    tokens: list[int] = []
    depth: list[int] = []
    segments: list[tuple[int, np.ndarray]] = []
    previous, previous_path = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for i in order:
        s = seqs[i]
        n = min(len(s), len(previous))
        differ = np.flatnonzero(s[:n] != previous[:n])
        shared = int(differ[0]) if len(differ) else n  # a duplicate shares every node
        start = len(tokens)
        nodes[i] = np.concatenate([previous_path[:shared], np.arange(start, start + len(s) - shared)])
        if len(s) > shared:
            segments.append((start, nodes[i]))
        tokens.extend(s[shared:].tolist())
        depth.extend(range(shared, len(s)))
        previous, previous_path = s, nodes[i]
    end = np.zeros(len(tokens), np.int64)
    for i in order:  # later sequences end later, so the last writer sets each node's subtree end
        if len(nodes[i]):
            end[nodes[i]] = nodes[i][-1] + 1
    want = [
        np.arange(len(s)) >= 1 if scored is None else np.asarray(scored[i], bool) & (np.arange(len(s)) >= 1)
        for i, s in enumerate(seqs)
    ]
    positions = [np.flatnonzero(w) for w in want]
    wanted_nodes = np.concatenate([nodes[i][p] for i, p in enumerate(positions)] or [np.zeros(0, np.int64)])
    unique, inverse = np.unique(wanted_nodes, return_inverse=True)
    parent = np.zeros(len(tokens), np.int64)
    for path in nodes:
        parent[path[1:]] = path[:-1]
    splits = np.cumsum([len(p) for p in positions])[:-1]
    return Pack(
        input_ids=torch.tensor([tokens], dtype=torch.long),
        position_ids=torch.tensor([depth], dtype=torch.long),
        subtree_end=torch.from_numpy(end),
        scored=torch.from_numpy(unique),
        predicted_by=torch.from_numpy(parent[unique]),
        gather=list(np.split(inverse.astype(np.int64), splits)) if positions else [],
        positions=positions,
        segments=segments,
    )


def plan(sequences: Sequence[np.ndarray], max_tokens: int, groups: Sequence | None = None) -> list[list[int]]:
    """Microbatches of sequence indices, each packing to at most max_tokens tokens where it can.

    Groups (e.g. the K trajectories of one task, which share their prompt) stay in one microbatch unless a
    group alone packs to more than max_tokens; a single sequence longer than that is a microbatch of its own.
    Order is kept, so the result is deterministic.
    """
    if max_tokens < 1:
        raise ValueError(f"microbatch token budget must be >= 1, got {max_tokens}")
    keys = list(range(len(sequences))) if groups is None else list(groups)
    members: dict = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    chunks = [chunk for group in members.values() for chunk in _split(sequences, group, max_tokens)]
    batches: list[list[int]] = []
    used = 0
    for chunk in chunks:
        size = packed_size([sequences[i] for i in chunk])
        if batches and used + size <= max_tokens:
            batches[-1].extend(chunk)
            used += size
        else:
            batches.append(list(chunk))
            used = size
    return batches


def _split(sequences: Sequence[np.ndarray], group: list[int], max_tokens: int) -> list[list[int]]:
    chunks = [[group[0]]]
    for i in group[1:]:
        if packed_size([sequences[j] for j in chunks[-1] + [i]]) <= max_tokens:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def packed_size(sequences: Sequence[np.ndarray]) -> int:
    """Tokens of the prefix tree of these sequences (what `pack` would lay out)."""
    ordered = sorted(np.asarray(s).tolist() for s in sequences)
    total, previous = 0, []
    for s in ordered:
        shared = 0
        for x, y in zip(s, previous):
            if x != y:
                break
            shared += 1
        total += len(s) - shared
        previous = s
    return total


# --- the forward ---
def packed_logp(
    model: torch.nn.Module, packed: Pack, *, temperature: float = 1.0, chunk_size: int = 1024, with_entropy=False
) -> Tensor | tuple[Tensor, Tensor]:
    """float32 (U,) logp of the scored nodes of one pack: log softmax(transform(logits) / temperature)[token].

    The decoder runs once over the row; the LM head only at the U positions that predict a scored token, in
    chunks of chunk_size rows (checkpointed under grad, so no (chunk, vocab) logits are kept for backward).
    with_entropy: also the (U,) entropy of each of those distributions, without grad, from the same logits.
    """
    device = model.get_input_embeddings().weight.device
    input_ids, position_ids = packed.input_ids.to(device), packed.position_ids.to(device)
    mask = tree_mask(model.config, packed.subtree_end.to(device), position_ids[0])
    extra = {"tree": Tree.of(packed, device)} if model.config._attn_implementation == TREE_ATTENTION else {}
    hidden = model.get_decoder()(
        input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False, **extra
    ).last_hidden_state[0]  # (N, hidden_size)
    positions = hidden[packed.predicted_by.to(device)]  # (U, hidden_size)
    targets = input_ids[0][packed.scored.to(device)]  # (U,)
    head, transform = model.get_output_embeddings(), logit_transform(model.config)
    use_checkpoint = torch.is_grad_enabled()
    pieces = []
    for start in range(0, positions.shape[0], chunk_size):
        h, y = positions[start : start + chunk_size], targets[start : start + chunk_size]
        args = (head, transform, h, y, temperature, with_entropy)
        pieces.append(checkpoint(_chunk_logp, *args, use_reentrant=False) if use_checkpoint else _chunk_logp(*args))
    empty = hidden.new_zeros(0, dtype=torch.float32)
    logp = torch.cat([p[0] for p in pieces]) if pieces else empty
    return (logp, torch.cat([p[1] for p in pieces]) if pieces else empty) if with_entropy else logp


def _chunk_logp(head, transform, hidden: Tensor, targets: Tensor, temperature: float, with_entropy: bool):
    """(logit[target] - logsumexp(logits),) for (n, hidden_size) hidden states and (n,) targets, in float32, and
    the entropy of each row's distribution when asked."""
    # fp32 before the softmax: bf16 logsumexp over ~1e5 entries loses the digits the ratio needs.
    logits = transform(head(hidden).float()) / temperature  # (n, vocab_size)
    normaliser = logits.logsumexp(-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - normaliser  # (n,)
    if not with_entropy:
        return (logp,)
    with torch.no_grad():  # H = logsumexp - E_p[logit]
        entropy = normaliser - ((logits - normaliser[:, None]).exp() * logits).sum(-1)
    return logp, entropy


def tree_mask(config, subtree_end: Tensor, position_ids: Tensor) -> Tensor | dict[str, Tensor]:
    """The attention mask of a packed row: node q sees node k iff k is q or an ancestor of q.

    In the model's own format (a (1, 1, N, N) bool mask for sdpa, additive for eager), and per layer type when
    some layers attend within a sliding window (the window counts positions in the sequence, not in the row).
    """
    n = subtree_end.shape[0]
    index = torch.arange(n, device=subtree_end.device)
    ancestor = (index[None, :] <= index[:, None]) & (index[:, None] < subtree_end[None, :])  # (N, N) [q, k]
    local = ancestor & (position_ids[:, None] - position_ids[None, :] < (getattr(config, "sliding_window", 0) or n))
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        return _mask_format(config, local if getattr(config, "sliding_window", None) else ancestor)
    masks = {}
    for kind in set(layer_types):
        if kind not in ("full_attention", "sliding_attention"):
            raise UnsupportedModelError(
                f"{config.model_type}: layers of type {kind!r} cannot be steered by a tree mask; packed log-probs "
                "support full and sliding-window attention layers"
            )
        masks[kind] = _mask_format(config, ancestor if kind == "full_attention" else local)
    return masks


def _mask_format(config, allowed: Tensor) -> Tensor:
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation in ("sdpa", TREE_ATTENTION):
        return allowed[None, None]
    if implementation == "eager":
        blocked = torch.full(allowed.shape, torch.finfo(torch.float32).min, device=allowed.device)
        return torch.where(allowed, 0.0, blocked)[None, None]
    raise UnsupportedModelError(
        f"{config.model_type}: attn_implementation {implementation!r} takes no tree mask; load the model with "
        "attn_implementation='sdpa' or 'eager' for packed log-probs"
    )


# --- tree attention: each run of new nodes attends to its own path only ---
# Stands in for sdpa; the model's own forward (no tree) stays sdpa. An eager model keeps its family's own eager
# function (Gemma 2's soft-caps, for one) with the dense tree mask.
TREE_ATTENTION = "freelunch_tree_sdpa"


@dataclass
class Bucket:
    """Segments of similar length, padded to one (S, L_max) x (S, P_max) shape: one batched attention call."""

    queries: Tensor  # (S * L_max,) node of each padded query slot (padding points at node 0)
    keys: Tensor  # (S * P_max,) node of each padded key slot
    shape: tuple[int, int, int]  # (S, L_max, P_max)
    visible: Tensor | None  # (S, 1, L_max, P_max) bool: the key is on the query's path, at or before it;
    # None when every segment is its sequence's whole path, so plain causal attention is exact
    query_positions: Tensor  # (S, 1, L_max, 1)
    key_positions: Tensor  # (S, 1, 1, P_max)

    def mask(self, sliding_window: int | None) -> Tensor | None:
        if not sliding_window:
            return self.visible
        causal = self.key_positions <= self.query_positions
        seen = causal if self.visible is None else self.visible
        return seen & (self.query_positions - self.key_positions < sliding_window)


@dataclass(frozen=True)
class Tree:
    """The attention layout of one pack on its device. A segment is a run of nodes one sequence added (its
    queries) with that sequence's path up to them (its keys); every node is the query of exactly one segment.
    Segments are bucketed by length so that padding to a bucket's shape wastes little."""

    buckets: list[Bucket]
    slots: Tensor  # (N,) each node's query slot in the buckets' outputs, laid end to end

    @staticmethod
    def of(packed: Pack, device) -> Tree:
        position = packed.position_ids[0].numpy()
        segments = sorted(packed.segments, key=lambda segment: -(int(segment[1][-1]) + 1 - segment[0]))
        buckets, slot_of_node, offset = [], np.zeros(len(position), np.int64), 0
        for members in _by_length(segments):
            bucket, slots = _bucket(members, position, device)
            slot_of_node[slots[:, 0]] = offset + slots[:, 1]
            buckets.append(bucket)
            offset += bucket.shape[0] * bucket.shape[1]
        return Tree(buckets, torch.from_numpy(slot_of_node).to(device))


def _by_length(segments: list, waste: float = 1.25) -> list[list]:
    """Longest first; a new bucket starts where padding a segment to the bucket's longest would exceed `waste`."""
    buckets: list[list] = []
    for segment in segments:
        length = int(segment[1][-1]) + 1 - segment[0]
        if buckets and buckets[-1][0][2] <= waste * length:
            buckets[-1].append((*segment, length))
        else:
            buckets.append([(*segment, length)])
    return buckets


def _bucket(members: list, position: np.ndarray, device) -> tuple[Bucket, np.ndarray]:
    """One bucket's index tensors and mask; also (node, slot) pairs of its real query slots."""
    count, longest, widest = len(members), max(m[2] for m in members), max(len(m[1]) for m in members)
    queries, keys = np.zeros((count, longest), np.int64), np.zeros((count, widest), np.int64)
    real_query, real_key = np.zeros((count, longest), bool), np.zeros((count, widest), bool)
    for s, (first, path, length) in enumerate(members):
        queries[s, :length], real_query[s, :length] = np.arange(first, first + length), True
        keys[s, : len(path)], real_key[s, : len(path)] = path, True
    query_positions, key_positions = position[queries], position[keys]
    whole_paths = all(len(path) == length for _, path, length in members)  # right padding keeps causal exact
    visible = None
    if not whole_paths:
        visible = real_key[:, None, :] & (key_positions[:, None, :] <= query_positions[:, :, None])
        visible |= ~real_query[:, :, None] & (np.arange(widest) == 0)  # a padding query sees one key: no NaN
    flat = np.flatnonzero(real_query.reshape(-1))
    as_tensor = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
    bucket = Bucket(
        queries=as_tensor(queries.reshape(-1)),
        keys=as_tensor(keys.reshape(-1)),
        shape=(count, longest, widest),
        visible=None if visible is None else as_tensor(visible[:, None]),
        query_positions=as_tensor(query_positions[:, None, :, None]),
        key_positions=as_tensor(key_positions[:, None, None, :]),
    )
    return bucket, np.stack([queries.reshape(-1)[flat], flat], axis=1)


def tree_attention(ordinary: Callable) -> Callable:
    """Attention over a packed prefix tree: each segment's queries attend to their own path only, so the cost is
    that of each sequence's own causal attention instead of the whole row's N x N (plus padding to one segment
    shape). Without a tree (the model's own forward) it is `ordinary`.

    query (1, H, N, D), key and value (1, H_kv, N, D), as transformers' attention functions get them. Like
    transformers' sdpa it leaves out attention-logit soft-capping (Gemma 2 applies that in eager only).
    """

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, *, tree=None, **kwargs):
        if tree is None:
            return ordinary(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        if module.training and dropout:
            raise ValueError("tree attention has no attention dropout; set the model's attention_dropout to 0")
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        return _tree_attention(query, key, value, scaling, tree, kwargs.get("sliding_window")), None

    return attention


def _tree_attention(query: Tensor, key: Tensor, value: Tensor, scaling: float, tree: Tree, window) -> Tensor:
    """(1, N, H, D) attention output: one sdpa call per bucket (causal, or with the bucket's tree mask)."""
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[-1]
    pieces = []
    for bucket in tree.buckets:
        count, longest, widest = bucket.shape
        q = query[0][:, bucket.queries].view(heads, count, longest, dim).transpose(0, 1)  # (S, H, L, D)
        k = key[0][:, bucket.keys].view(kv_heads, count, widest, dim).transpose(0, 1)  # (S, H_kv, P, D)
        v = value[0][:, bucket.keys].view(kv_heads, count, widest, dim).transpose(0, 1)
        mask = bucket.mask(window)
        causal = {"is_causal": True} if mask is None else {"attn_mask": mask}
        out = F.scaled_dot_product_attention(q, k, v, scale=scaling, enable_gqa=heads != kv_heads, **causal)
        pieces.append(out.transpose(1, 2).reshape(count * longest, heads, dim))  # (S * L, H, D)
    return torch.cat(pieces)[tree.slots][None]  # (1, N, H, D)


def _register_tree_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(TREE_ATTENTION, tree_attention(AttentionInterface()["sdpa"]))
    AttentionMaskInterface.register(TREE_ATTENTION, sdpa_mask)


# --- entry points ---
@torch.no_grad()
def sequence_logp(
    model: torch.nn.Module,
    sequences: Sequence[np.ndarray],
    *,
    scored: Sequence[np.ndarray] | None = None,
    groups: Sequence | None = None,
    temperature: float = 1.0,
    max_tokens: int = 4096,
    chunk_size: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Per sequence a float32 (T,) array: the logp of each scored token (default: every token but the first),
    0 elsewhere. Microbatches follow `plan`; `progress(n)` is called with the sequences done so far."""
    out = [np.zeros(len(s), np.float32) for s in sequences]
    done = 0
    for rows in plan(sequences, max_tokens, groups):
        packed = pack([sequences[i] for i in rows], None if scored is None else [scored[i] for i in rows])
        logp = packed_logp(model, packed, temperature=temperature, chunk_size=chunk_size).cpu().numpy()
        packed.spread(logp, [out[i] for i in rows])
        done += len(rows)
        if progress is not None:
            progress(done)
    return out


def token_logp(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """The padded form: float32 (B, T) log-probs of right-padded (B, T) input_ids (mask 1 on real tokens).

    out[b, j] = log softmax(logits[b, j - 1] / temperature)[input_ids[b, j]]; out[:, 0] and padding are 0.
    The rows are packed as one prefix tree (the padding never reaches the model); gradients flow to the model.
    """
    lengths = attention_mask.sum(dim=1).tolist()
    sequences = [input_ids[b, :n].cpu().numpy() for b, n in enumerate(lengths)]
    packed = pack(sequences)
    logp = packed_logp(model, packed, temperature=temperature, chunk_size=chunk_size)
    rows, cols = [], []
    for b, positions in enumerate(packed.positions):
        rows.append(np.full(len(positions), b))
        cols.append(positions)
    out = logp.new_zeros(input_ids.shape)
    index = (torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(cols)))
    flat = logp[torch.from_numpy(np.concatenate(packed.gather))] if len(logp) else logp
    return out.index_put(tuple(i.to(out.device) for i in index), flat)


def load_model(model_dir: str, *, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A transformers causal LM from a directory, on `device`, prepared for this path (prepare_model)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    prepare_model(model)
    return model


def prepare_model(model: torch.nn.Module) -> None:
    """Make the model ready for this path, then refuse it if the path would score it wrong.

    A model with sdpa or eager attention switches to the tree attention (its ordinary forward stays sdpa). Then
    two short random sequences that share a prefix are scored packed and compared with log_softmax of the
    model's own forward on each alone. That catches a logit post-processing missing from LOGIT_TRANSFORMS and
    layers a tree mask cannot steer (recurrent or linear-attention state would leak between the branches).
    """
    config = model.config
    if getattr(config, "_attn_implementation", None) == "sdpa":
        _register_tree_attention()
        try:
            model.set_attn_implementation(TREE_ATTENTION)
        except (ValueError, NotImplementedError):
            pass  # a family that cannot switch keeps its own attention with the dense tree mask
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab, (12,), generator=generator)
    second = torch.cat([first[:5], torch.randint(0, vocab, (7,), generator=generator)])
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = pack([first.numpy(), second.numpy()])
            ours = packed_logp(model, packed)
            worst = 0.0
            for s, sequence in enumerate((first, second)):
                logits = model(input_ids=sequence[None].to(device), use_cache=False).logits[0, :-1].float()
                own = torch.log_softmax(logits, -1).gather(-1, sequence[1:, None].to(device))[:, 0]
                worst = max(worst, float((ours[torch.from_numpy(packed.gather[s])] - own).abs().max()))
    finally:
        model.train(was_training)
    tolerance = 1e-3 if model.get_input_embeddings().weight.dtype == torch.float32 else 5e-2
    if not worst <= tolerance:
        raise UnsupportedModelError(
            f"{config.model_type}: packed log-probs differ from the model's own forward by {worst:.3g} nats "
            f"(tolerance {tolerance}), so this model family cannot be scored: its logit post-processing is not "
            f"one of those learner/logp.py knows ({', '.join(sorted(LOGIT_TRANSFORMS))}) or its layers keep "
            "state a tree mask cannot steer"
        )
