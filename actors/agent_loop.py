"""[agent loop] env -> [agent loop] -> trajectory: one agent on one task, token in, token out.

`run_agent` alternates engine.generate (the action) and env.step (the observation), appending ids to one
token stream. Only sampled ids are action tokens; template text and observations are context. Imports no
vllm/ray/deepspeed: the engine is any object with `async generate(prompt_ids, *, max_tokens, temperature)`,
the env any object with `async reset(task)`, `async step(action)` and `tools` (an envs.process.EnvProcess in a
run). The env's tool schemas, carried in the env process's reset reply, reach the chat template through
`Conversation(..., tools=env.tools)`; each step's `role` says whether its observation is a tool result.
"""

from typing import Protocol

from transformers import PreTrainedTokenizerBase

from actors.render import Conversation
from actors.trajectory import Trajectory
from envs.base import StepResult, Task, resolved
from envs.process import EnvTimeout


class Engine(Protocol):
    async def generate(self, prompt_ids: list[int], *, max_tokens: int, temperature: float):
        """Sample one action; returns an object with token_ids, logp and finish_reason ("stop" | "length")."""
        ...


class AsyncEnv(Protocol):
    tools: list[dict]  # OpenAI-style tool schemas of the task the last reset started; [] for an env without tools

    async def reset(self, task: Task) -> str:
        """Start a trajectory on `task`; returns the first observation. Raises EnvTimeout past its limit."""
        ...

    async def step(self, action: str) -> StepResult:
        """Apply the action text; raises EnvTimeout past its limit, any other exception for a failed env."""
        ...


async def run_agent(
    env: AsyncEnv,
    task: Task,
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    *,
    trajectory_id: str,
    group_id: str,
    max_steps: int,
    max_tokens: int,
    max_trajectory_tokens: int,
    temperature: float,
) -> Trajectory:
    """Play one trajectory. policy_version is left 0: the rollout actor stamps it.

    An exception from env.reset/env.step ends the trajectory with finish_reason "timeout" (EnvTimeout) or
    "error" (anything else), its message in `error`; the steps before it are kept and the failed step gets
    reward 0. Exceptions from the engine propagate. `success` is the env's `success` on a "done" ending; `role` is
    the chat role an observation renders in; both read through envs.base.resolved, so an env that gives them as
    info["success"] / info["role"] works too.
    len(tokens) never exceeds max_trajectory_tokens, except for a first prompt that alone is longer: it is kept
    whole, and the trajectory ends "max_tokens" with 0 steps.
    """
    trajectory = Trajectory(
        trajectory_id=trajectory_id, task_id=task.task_id, group_id=group_id, policy_version=0,
        tokens=[], action_mask=[], step_index=[], behavior_logp=[], step_rewards=[],
        outcome=0.0, num_steps=0, finish_reason="",
    )  # fmt: skip
    try:
        observation = await env.reset(task)
    except Exception as error:
        return _finish(trajectory, _failure(error), error)
    conversation = Conversation(tokenizer, observation, tools=env.tools)
    _append_context(trajectory, conversation.prompt_ids())
    for t in range(max_steps):
        # One slot stays free for the eos a cut action gets, so the limit holds after it too.
        budget = max_trajectory_tokens - len(trajectory.tokens) - 1
        if budget <= 0:
            return _finish(trajectory, "max_tokens")
        # A copy: the engine may keep the prompt while this list grows.
        prompt_ids = list(trajectory.tokens)
        completion = await engine.generate(prompt_ids, max_tokens=min(max_tokens, budget), temperature=temperature)
        _append_action(trajectory, completion.token_ids, completion.logp, t)
        action_text, extra_ids = conversation.add_action(completion.token_ids, completion.finish_reason == "stop")
        _append_context(trajectory, extra_ids)
        try:
            result = await env.step(action_text)
        except Exception as error:
            # The failed step's action tokens carry step_index t, so it keeps a (zero) reward slot.
            trajectory.step_rewards.append(0.0)
            return _finish(trajectory, _failure(error), error)
        result = resolved(result)
        trajectory.step_rewards.append(result.reward)
        if result.done:
            trajectory.success = bool(result.success)
            return _finish(trajectory, "done")
        if t + 1 == max_steps:
            break
        observation_ids = conversation.add_observation(result.observation, role=result.role)
        if len(trajectory.tokens) + len(observation_ids) > max_trajectory_tokens:
            return _finish(trajectory, "max_tokens")
        _append_context(trajectory, observation_ids)
    return _finish(trajectory, "max_steps")


def _append_context(trajectory: Trajectory, ids: list[int]) -> None:
    """Prompt, observation and template ids: not sampled by the policy, so masked out of the loss."""
    trajectory.tokens.extend(ids)
    trajectory.action_mask.extend([False] * len(ids))
    trajectory.step_index.extend([-1] * len(ids))
    trajectory.behavior_logp.extend([0.0] * len(ids))


def _append_action(trajectory: Trajectory, ids: list[int], logp: list[float], t: int) -> None:
    if len(logp) != len(ids):
        raise ValueError(f"engine returned {len(ids)} token ids but {len(logp)} logps")
    trajectory.tokens.extend(ids)
    trajectory.action_mask.extend([True] * len(ids))
    trajectory.step_index.extend([t] * len(ids))
    trajectory.behavior_logp.extend(logp)


def _failure(error: Exception) -> str:
    return "timeout" if isinstance(error, EnvTimeout) else "error"


def _finish(trajectory: Trajectory, reason: str, error: Exception | None = None) -> Trajectory:
    trajectory.finish_reason = reason
    trajectory.error = "" if error is None else f"{type(error).__name__}: {error}"
    trajectory.num_steps = len(trajectory.step_rewards)
    trajectory.outcome = float(sum(trajectory.step_rewards))
    return trajectory
