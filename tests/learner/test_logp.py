"""The one log-prob path: equal to the model's own forward for every family, packed = unpacked (values and
gradients), the microbatch plan, and the refusal of models it would score wrong."""

import numpy as np
import pytest
import torch
import transformers

from learner.logp import (
    UnsupportedModelError,
    pack,
    packed_logp,
    packed_size,
    plan,
    prepare_model,
    sequence_logp,
    token_logp,
)

VOCAB = 256
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    initializer_range=0.2,  # logits of a few nats, so a missed logit transform shows
)
# One tiny random model of each family; the post-processing values are large enough that skipping them is
# visible (the issue measured 0.25, 6.8 and 7.6 nats on such models).
FAMILIES = {
    "llama": lambda: transformers.LlamaConfig(**SMALL),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL),
    "gemma2": lambda: transformers.Gemma2Config(**SMALL, final_logit_softcapping=1.0, sliding_window=8),
    "gemma3": lambda: transformers.Gemma3TextConfig(**SMALL, final_logit_softcapping=1.0, sliding_window=8),
    "cohere": lambda: transformers.CohereConfig(**SMALL, logit_scale=0.0625),
    "granite": lambda: transformers.GraniteConfig(**SMALL, logits_scaling=8.0),
}


def tiny(family: str, attention: str = "sdpa") -> transformers.PreTrainedModel:
    """A tiny random model, prepared for the path (sdpa models switch to the tree attention)."""
    torch.manual_seed(0)
    config = FAMILIES[family]()
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attention)
    prepare_model(model)
    return model.eval()


def own_logp(model, sequence: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log_softmax(model(input_ids).logits / T) at each token from position 1 (the definition)."""
    ids = torch.tensor(sequence)[None]
    logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float() / temperature
    return logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0].detach().numpy()


def group(seed: int, prefix: int, suffixes: list[int]) -> list[np.ndarray]:
    """Sequences that share `prefix` tokens and then diverge at their first own token."""
    rng = np.random.default_rng(seed)
    shared = rng.integers(0, VOCAB, prefix)
    out = []
    for k, n in enumerate(suffixes):
        own = rng.integers(0, VOCAB, n)
        own[0] = (shared[-1] + 1 + k) % VOCAB if prefix else own[0]  # members differ at their first own token
        out.append(np.concatenate([shared, own]))
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # tree attention; the family's own eager + dense mask
def test_equals_the_models_own_forward_for_every_family(family, temperature, attention):
    model = tiny(family, attention)
    assert model.config._attn_implementation == ("freelunch_tree_sdpa" if attention == "sdpa" else "eager")
    sequences = group(1, 6, [9, 4, 13]) + [np.arange(5, 21) % VOCAB]  # ragged, shared prefix and a stranger
    ours = sequence_logp(model, sequences, temperature=temperature)
    for sequence, logp in zip(sequences, ours):
        assert logp[0] == 0.0
        np.testing.assert_allclose(logp[1:], own_logp(model, sequence, temperature), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gemma2", "cohere", "granite"])
def test_skipping_the_logit_transform_would_be_wrong(family):
    """Guard for the test above: these families' post-processing moves log-probs by far more than 1e-5."""
    model = tiny(family)
    sequence = group(2, 4, [8])[0]
    ids = torch.tensor(sequence)[None]
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0, :-1]
    plain = model.get_output_embeddings()(hidden).log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    assert float((plain.detach() - torch.from_numpy(own_logp(model, sequence))).abs().max()) > 0.1


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_sliding_window_counts_positions_in_the_sequence_not_in_the_row(attention):
    """gemma2 alternates 8-token sliding-window layers with full ones; sequences longer than the window, packed
    after a long first branch, must see exactly the window their own forward sees."""
    model = tiny("gemma2", attention)
    sequences = group(3, 10, [14, 11, 3])
    for sequence, logp in zip(sequences, sequence_logp(model, sequences)):
        np.testing.assert_allclose(logp[1:], own_logp(model, sequence), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "sequences",
    [
        group(4, 7, [5, 9, 2, 6]),  # a group sharing its prompt, ragged
        group(5, 0, [6, 6, 3]),  # members that diverge at the first token
        group(6, 8, [4]),  # a group of one
        [np.array([3, 4, 5, 6]), np.array([3, 4, 5, 6]), np.array([3, 4])],  # a duplicate and a prefix
    ],
    ids=["ragged", "diverge-at-first", "group-of-one", "duplicate-and-prefix"],
)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logp_and_gradients_equal_the_unshared_path(sequences, attention):
    model = tiny("llama", attention)
    model.train()
    weights = [torch.linspace(-1, 1, len(s)) for s in sequences]

    def grads(loss_fn):
        model.zero_grad()
        loss_fn().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    def unshared():
        total = 0
        for s, w in zip(sequences, weights):
            packed = pack([s])
            logp = packed_logp(model, packed, chunk_size=3)[torch.from_numpy(packed.gather[0])]
            total = total + (logp * w[1:]).sum()
        return total

    packed = pack(sequences)

    def shared():
        logp = packed_logp(model, packed, chunk_size=3)
        return sum((logp[torch.from_numpy(g)] * w[1:]).sum() for g, w in zip(packed.gather, weights))

    assert packed.input_ids.shape[1] == packed_size(sequences) <= sum(len(s) for s in sequences)
    expected, got = grads(unshared), grads(shared)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        assert torch.allclose(shared(), unshared(), atol=1e-5)


def test_shared_prompt_is_laid_out_once():
    sequences = group(7, 20, [5, 5, 5, 5])
    packed = pack(sequences)
    assert packed.input_ids.shape == (1, 20 + 4 * 5)
    # each sequence reads back from the tree in order: node tokens along its path are its tokens
    for s, sequence in enumerate(sequences):
        assert len(packed.gather[s]) == len(sequence) - 1
        tokens = packed.input_ids[0][packed.scored[torch.from_numpy(packed.gather[s])]]
        assert tokens.tolist() == sequence[1:].tolist()


def test_only_scored_positions_are_computed():
    model = tiny("llama")
    sequences = group(8, 6, [7, 5])
    scored = [np.arange(len(s)) >= len(s) - 3 for s in sequences]  # the last 3 tokens, like an action
    packed = pack(sequences, scored)
    assert len(packed.scored) == 6
    out = sequence_logp(model, sequences, scored=scored)
    for sequence, mask, logp in zip(sequences, scored, out):
        assert (logp[~mask] == 0).all()
        np.testing.assert_allclose(logp[mask], own_logp(model, sequence)[mask[1:]], atol=1e-5, rtol=0)


def test_plan_keeps_groups_whole_under_the_token_budget():
    sequences = [s for seed in range(4) for s in group(seed, 10, [5, 5])]  # 4 groups of 2, 20 tokens each
    groups = [seed for seed in range(4) for _ in range(2)]
    assert plan(sequences, 40, groups) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan(sequences, 25, groups) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert plan(sequences, 15, groups) == [[i] for i in range(8)]  # a group larger than the budget is split
    assert sorted(i for batch in plan(sequences, 33, None) for i in batch) == list(range(8))
    with pytest.raises(ValueError, match="token budget must be >= 1"):
        plan(sequences, 0, groups)


def test_token_logp_padded_form_matches_and_ignores_padding():
    model = tiny("qwen2")
    sequences = group(9, 5, [6, 2, 9])
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros(len(sequences), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for b, s in enumerate(sequences):
        input_ids[b, : len(s)] = torch.tensor(s)
        attention_mask[b, : len(s)] = 1
    out = token_logp(model, input_ids, attention_mask, temperature=0.7, chunk_size=4)
    for b, s in enumerate(sequences):
        assert (out[b, len(s) :] == 0).all() and out[b, 0] == 0
        np.testing.assert_allclose(out[b, 1 : len(s)].detach().numpy(), own_logp(model, s, 0.7), atol=1e-5)


def test_chunk_size_does_not_change_the_result():
    model = tiny("llama")
    sequences = group(10, 4, [8, 8])
    packed = pack(sequences)
    whole = packed_logp(model, packed, chunk_size=1000)
    for chunk in (1, 3, 7):
        torch.testing.assert_close(packed_logp(model, packed, chunk_size=chunk), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_entropy_is_that_of_the_models_own_distribution(family):
    model = tiny(family)
    sequences = group(11, 5, [6, 4, 7])
    packed = pack(sequences)
    logp, entropy = packed_logp(model, packed, temperature=0.7, chunk_size=3, with_entropy=True)
    # the same chunks: asking for the entropy does not change a log-prob (other chunk shapes round differently)
    torch.testing.assert_close(logp, packed_logp(model, packed, temperature=0.7, chunk_size=3), atol=0, rtol=0)
    order = packed.order()
    expected = []
    for s in sequences:
        logits = model(input_ids=torch.tensor(s)[None], use_cache=False).logits[0, :-1].float() / 0.7
        expected.append(-(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).detach())
    np.testing.assert_allclose(entropy[order].numpy(), torch.cat(expected).numpy(), atol=1e-5)
    assert not entropy.requires_grad


def test_a_family_with_unknown_post_processing_is_refused():
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(FAMILIES["llama"]())
    with pytest.raises(UnsupportedModelError, match="llama: packed log-probs differ from the model's own forward"):
        prepare_model(_PostProcessed(model))


class _PostProcessed(torch.nn.Module):
    """A causal LM whose forward scales the logits, a post-processing learner/logp.py does not know."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits * 3.0
        return out

    def get_decoder(self):
        return self.inner.get_decoder()

    def set_attn_implementation(self, name):
        self.inner.set_attn_implementation(name)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()


def test_a_model_with_recurrent_layers_is_refused():
    """Mamba state would flow from one branch of the tree into the next: prepare_model must notice."""
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4)
    model = transformers.MambaForCausalLM(config).eval()
    with pytest.raises(UnsupportedModelError):
        prepare_model(model)
