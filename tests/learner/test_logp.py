"""token_logp against the naive full-vocabulary log_softmax gather, plus microbatches and pad."""

import numpy as np
import pytest
import torch
import transformers

from learner.logp import microbatches, pad, token_logp

BOS = 1


def tiny_llama(tie_word_embeddings: bool = False) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        tie_word_embeddings=tie_word_embeddings,
    )
    return transformers.LlamaForCausalLM(config).eval()


def naive_logp(model, input_ids, attention_mask, temperature):
    """The reference path: full-vocabulary fp32 log_softmax, shifted by one, zero off real targets."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float() / temperature
    gathered = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    gathered = torch.where(attention_mask[:, 1:].bool(), gathered, torch.zeros_like(gathered))
    return torch.nn.functional.pad(gathered, (1, 0))


def trajectories(with_bos: bool) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    lengths = [9, 4, 13]
    sequences = [torch.randint(2, 512, (n,), generator=generator).tolist() for n in lengths]
    return [[BOS, *s] if with_bos else s for s in sequences]


@pytest.mark.parametrize("temperature", [0.7, 1.0])
@pytest.mark.parametrize("with_bos", [True, False])
@pytest.mark.parametrize("tie", [False, True])
def test_token_logp_matches_naive_log_softmax_gather(temperature, with_bos, tie):
    model = tiny_llama(tie)
    input_ids, attention_mask = pad(trajectories(with_bos))
    with torch.no_grad():
        ours = token_logp(model, input_ids, attention_mask, temperature=temperature, chunk_size=5)
        naive = naive_logp(model, input_ids, attention_mask, temperature)
    assert ours.dtype == torch.float32 and ours.shape == input_ids.shape
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=0)
    assert torch.all(ours[:, 0] == 0)
    assert torch.all(ours[attention_mask == 0] == 0)
    assert torch.all(ours[:, 1:][attention_mask[:, 1:] == 1] < 0)


def test_token_logp_is_unchanged_by_right_padding():
    model = tiny_llama()
    sequences = trajectories(with_bos=True)
    input_ids, attention_mask = pad(sequences)
    with torch.no_grad():
        batched = token_logp(model, input_ids, attention_mask)
        for row, tokens in enumerate(sequences):
            alone = token_logp(model, torch.tensor([tokens]), torch.ones(1, len(tokens), dtype=torch.long))
            torch.testing.assert_close(batched[row, : len(tokens)], alone[0], atol=1e-5, rtol=0)


def test_token_logp_chunk_size_does_not_change_result():
    model = tiny_llama()
    input_ids, attention_mask = pad(trajectories(with_bos=False))
    num_scored = int(attention_mask[:, 1:].sum())
    with torch.no_grad():
        whole = token_logp(model, input_ids, attention_mask, chunk_size=num_scored)
        for chunk_size in (1, 3, num_scored - 1):
            chunked = token_logp(model, input_ids, attention_mask, chunk_size=chunk_size)
            torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("tie", [False, True])
def test_token_logp_gradients_match_naive_path(tie):
    model = tiny_llama(tie)
    input_ids, attention_mask = pad(trajectories(with_bos=True))
    weights = torch.randn(input_ids.shape, generator=torch.Generator().manual_seed(2))

    def grads(logp_fn):
        model.zero_grad(set_to_none=True)
        (logp_fn() * weights).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    ours = grads(lambda: token_logp(model, input_ids, attention_mask, temperature=0.7, chunk_size=4))
    naive = grads(lambda: naive_logp(model, input_ids, attention_mask, 0.7))
    assert ours.keys() == naive.keys()
    for name in naive:
        torch.testing.assert_close(ours[name], naive[name], atol=1e-5, rtol=1e-4, msg=name)


def test_token_logp_of_single_token_sequences_is_zero():
    model = tiny_llama()
    input_ids, attention_mask = pad([[BOS], [7]])
    with torch.no_grad():
        out = token_logp(model, input_ids, attention_mask)
    assert out.tolist() == [[0.0], [0.0]]


def test_microbatches_sorts_longest_first_and_caps_size():
    assert microbatches([3, 10, 5, 10, 1], 2) == [[1, 3], [2, 0], [4]]
    assert microbatches([], 4) == []
    with pytest.raises(ValueError, match="size"):
        microbatches([1], 0)


def test_pad_right_pads_ids_and_mask():
    input_ids, attention_mask = pad([[5, 6, 7], np.array([8])], pad_id=9)
    assert input_ids.dtype == torch.long and attention_mask.dtype == torch.long
    assert input_ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def saved_vocab_tensors(logp_fn) -> list[tuple[int, ...]]:
    """Shapes of tensors autograd keeps for backward whose last axis is the vocabulary."""
    shapes = []

    def pack(tensor):
        if tensor.dim() >= 2 and tensor.shape[-1] == 512:
            shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logp_fn()
    return shapes


def test_token_logp_keeps_no_vocabulary_logits_for_backward():
    model = tiny_llama()
    input_ids, attention_mask = pad(trajectories(with_bos=True))
    assert saved_vocab_tensors(lambda: naive_logp(model, input_ids, attention_mask, 1.0))
    assert saved_vocab_tensors(lambda: token_logp(model, input_ids, attention_mask, chunk_size=4)) == []
