"""[agent loop] The engine: vLLM serving the policy to many agent loops at once. Only file importing vllm.

`VLLMEngine.generate(prompt_ids, ...)` is a coroutine: each agent loop awaits its own request while one
stepping task drives vLLM's continuous batching for all of them, in this process (no engine-core
subprocess: on CPU that saves ~1.5 GiB and ~20 s of start-up per engine). Log-probs are those of the
distribution actually sampled from, after temperature (`logprobs_mode="processed_logprobs"`; no top-k or
top-p is ever applied), i.e. the behaviour policy itself; the learner scores logits / temperature to match.
`load_weights` swaps weights in place (vLLM `reload_weights`) and drops the prefix cache;
`load_weights_between_actions` does it while agent loops run: new requests wait, the actions being
sampled finish under the weights that began them, so no action mixes two policies.

Lockstep (`lockstep=True`): the batches vLLM forms, and so the random numbers each request draws, depend on
when each agent loop's env answers. In lockstep the agent loops `expect`ed for a collect take seats
(`engine.seat(key)`); an engine step waits until every seated loop has asked for its next action or left,
and new requests enter the batch in key order. Sampling then depends only on the seed and the trajectories,
at the cost of waiting for the slowest env step before each engine step. A loop waiting for something that
needs other loops' actions first (a free env process) `park`s, so the engine never waits on it.
"""

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

# vLLM warns about these on every weight load although nothing is wrong: the learner's fp32 tensors are cast to
# the engine's dtype, and a tied LM head has no tensor of its own to load. load_weights checks what it loaded.
QUIET_LOAD_WARNINGS = ("Attempted to load weight", "Failed to load weights")
LOAD_CHECK = "model.embed_tokens.weight"  # read back after each load: vLLM's CPU backend keeps it as a tensor


class _QuietLoad(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in QUIET_LOAD_WARNINGS)


# The loggers that emit them (vLLM names its loggers by module); a logger's filter sees every record it emits.
QUIET_LOGGERS = ("vllm.model_executor.models.utils", "vllm.model_executor.model_loader.reload.layerwise")


def _quiet_weight_loading() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietLoad) for f in logger.filters):
            logger.addFilter(_QuietLoad())


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    logp: list[float]  # behaviour log-prob of each sampled token
    finish_reason: str  # "stop" (an end-of-turn token was sampled) or "length" (max_tokens reached)


class VLLMEngine:
    def __init__(
        self,
        model_dir: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 4096,
        kv_cache_gb: float = 1.0,
        enforce_eager: bool = True,
        tensor_parallel_size: int = 1,
        lockstep: bool = False,
    ):
        # In-process engine core: vLLM reads this switch itself, so it has to be set before the engine.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import EngineArgs, LLMEngine

        _quiet_weight_loading()

        if dtype == "bfloat16" and torch.cpu._is_amx_tile_supported():
            # vLLM's CPU attention picks AMX kernels for bf16 without asking Linux for AMX tile
            # permission; the first small batch then dies with SIGILL. Ask for it up front.
            torch.cpu._init_amx()
        args = EngineArgs(
            model=model_dir,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=int(kv_cache_gb * 2**30),
            enforce_eager=enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            # one shard: the model runs in this process; more: vLLM's worker processes on the actor's GPUs
            distributed_executor_backend="uni" if tensor_parallel_size == 1 else "mp",
            logprobs_mode="processed_logprobs",
            disable_log_stats=True,
        )
        self.dtype = getattr(torch, dtype)
        self._engine = LLMEngine.from_engine_args(args)
        self._request_ids = itertools.count()
        self._waiting: dict[str, asyncio.Future] = {}
        self._stepper: asyncio.Task | None = None
        self._accepting = asyncio.Event()  # cleared while weights load
        self._accepting.set()
        self.lockstep = lockstep
        self._seated: set[str] = set()  # lockstep: agent loops of the collects in play
        self._busy: set[str] = set()  # seated loops between two requests (the engine waits for them)
        self._all_asked: asyncio.Event | None = None  # the stepper's: set while _busy is empty
        self._queued: dict[str, tuple] = {}  # lockstep: key -> (prompt, params, future) not yet in the batch
        self.sampled_tokens = 0  # since the engine started: tokens sampled, counted in the step that sampled them
        self._sampled: dict[str, int] = {}  # request id -> its tokens counted so far (outputs are cumulative)
        self.step_s = 0.0  # and seconds spent in engine steps

    async def generate(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        key: str | None = None,
    ) -> Completion:
        """One action for `prompt_ids`. `key` is the seat of the asking agent loop in lockstep (see `seat`)."""
        from vllm import SamplingParams, TokensPrompt

        if key is not None:
            self._set_busy(key, False)  # asking; one held back by a weight load counts as asking too
        await self._accepting.wait()
        # No per-request seed: vLLM's CPU sampler cannot rewind seeded generators ("CPU Generator does
        # not use offset"); sampling is reproducible through the engine seed instead.

        params = SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, logprobs=0, detokenize=False
        )
        done = asyncio.get_running_loop().create_future()
        prompt = TokensPrompt(prompt_token_ids=list(prompt_ids))
        if key is None:
            self._add(prompt, params, done)
        else:
            self._queued[key] = (prompt, params, done)
        if self._stepper is None or self._stepper.done():
            self._stepper = asyncio.create_task(self._step_until_idle())
        return await done

    def _add(self, prompt, params, done: asyncio.Future) -> str:
        request_id = str(next(self._request_ids))
        self._waiting[request_id] = done
        self._engine.add_request(request_id, prompt, params)
        return request_id

    async def _step_until_idle(self) -> None:
        # One vLLM step serves every live request; yielding between steps lets agent loops whose
        # request just finished run their env step and submit their next prompt into the same batch.
        # In lockstep no step is taken while a seated loop is busy, and asked requests join in key order:
        # which step a request joins depends on the engine's steps alone, not on how fast envs answer.
        keys: dict[str, str] = {}  # request id -> key, for the keyed requests in the batch
        self._all_asked = asyncio.Event()  # made here: an event belongs to the loop that first waits on it
        self._update_all_asked()
        while self._waiting or self._queued:
            await self._all_asked.wait()
            for key in sorted(self._queued):
                keys[self._add(*self._queued.pop(key))] = key
            start = time.perf_counter()
            try:
                outputs = self._engine.step()
            except Exception as error:  # the engine is dead: fail every waiter rather than hang them
                for future in self._waiting.values():
                    future.set_exception(error)
                self._waiting.clear()
                raise
            self.step_s += time.perf_counter() - start
            for output in outputs:
                sampled = len(output.outputs[0].token_ids)
                self.sampled_tokens += sampled - self._sampled.pop(output.request_id, 0)
                if not output.finished:
                    self._sampled[output.request_id] = sampled
                    continue
                if (key := keys.pop(output.request_id, None)) is not None:
                    self._set_busy(key, True)  # before its loop resumes, so no step slips in between
                done = self._waiting.pop(output.request_id)
                if not done.cancelled():  # its agent loop may have been cancelled meanwhile
                    done.set_result(_completion(output.outputs[0]))
            await asyncio.sleep(0)

    # --- lockstep seats ---
    def expect(self, keys: Iterable[str]) -> None:
        """Seat these agent loops (lockstep only): until each asks or leaves, no engine step admits requests."""
        if self.lockstep:
            for key in keys:
                self._seated.add(key)
                self._set_busy(key, True)

    def seat(self, key: str) -> "Seat":
        """What an expected agent loop calls `generate` on (the engine itself when not in lockstep)."""
        return Seat(self, key if self.lockstep else None)

    def park(self, key: str) -> None:
        """The loop waits on other loops' progress: steps go on without it until it `unpark`s."""
        self._set_busy(key, False)

    def unpark(self, key: str) -> None:
        self._set_busy(key, True)

    def leave(self, key: str) -> None:
        """The loop is done (or failed): steps no longer wait for it."""
        self._set_busy(key, False)
        self._seated.discard(key)

    def _set_busy(self, key: str, busy: bool) -> None:
        if busy and key in self._seated:
            self._busy.add(key)
        else:
            self._busy.discard(key)
        self._update_all_asked()

    def _update_all_asked(self) -> None:
        if self._all_asked is not None:
            self._all_asked.clear() if self._busy else self._all_asked.set()

    def reseed(self, seed: int) -> None:
        """Restart the sampling random stream: the engine core runs in this process and samples from
        torch's default generator, so an iteration's samples depend only on (seed, what is asked)."""
        torch.manual_seed(seed)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the live model; later requests see only the new weights."""
        if self._waiting:
            raise RuntimeError("load_weights while requests are in flight would mix two policies in one action")
        sent: dict[str, torch.Tensor] = {}

        def cast():  # the learner's tensors may be fp32
            for name, tensor in named_tensors:
                tensor = tensor.to(self.dtype)
                if name == LOAD_CHECK:
                    sent[name] = tensor[:8].clone()
                yield name, tensor

        self._engine.collective_rpc("reload_weights", kwargs={"weights_iterator": cast()})
        if sent:
            live = self._engine.collective_rpc(_rows, args=(LOAD_CHECK, 8))[0]
            if live is not None and not torch.equal(live, sent[LOAD_CHECK]):
                raise RuntimeError(
                    f"the engine did not take the broadcast weights: its {LOAD_CHECK} differs from the sent one"
                )
        self.reset_prefix_cache()  # cached KV was computed with the old weights

    def reset_prefix_cache(self) -> None:
        """Forget cached prompt KV: a later request recomputes its prompt as a first one would."""
        self._engine.reset_prefix_cache()

    async def load_weights_between_actions(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """load_weights once the actions in flight are sampled; requests arriving meanwhile wait for it."""
        self._accepting.clear()
        try:
            if self._stepper is not None:
                await asyncio.wait([self._stepper])  # it ends when no request is left; an error stays its own
            self.load_weights(named_tensors)
        finally:
            self._accepting.set()

    def named_weights(self) -> dict[str, torch.Tensor]:
        """The engine's live parameters under vLLM's names (for equality checks after a broadcast)."""
        return self._engine.collective_rpc(_named_weights)[0]


@dataclass(frozen=True)
class Seat:
    """One agent loop's handle on the engine: its requests carry its key (None: plain, unordered requests)."""

    engine: VLLMEngine
    key: str | None = None

    async def generate(self, prompt_ids: list[int], *, max_tokens: int, temperature: float = 1.0) -> Completion:
        return await self.engine.generate(prompt_ids, max_tokens=max_tokens, temperature=temperature, key=self.key)


def _rows(worker, name: str, count: int) -> torch.Tensor | None:
    """The first `count` rows of the live parameter `name` (None if the engine has no such tensor)."""
    parameter = dict(worker.model_runner.model.named_parameters()).get(name)
    return None if parameter is None or parameter.numel() == 0 else parameter[:count].detach().clone()


def _named_weights(worker) -> dict[str, torch.Tensor]:
    model = worker.model_runner.model
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _completion(output) -> Completion:
    token_ids = list(output.token_ids)
    logp = [entry[token].logprob for entry, token in zip(output.logprobs, token_ids)]
    return Completion(
        token_ids=token_ids, logp=logp, finish_reason="stop" if output.finish_reason == "stop" else "length"
    )
