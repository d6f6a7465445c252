"""The agent loop records exactly the sampled ids as actions and ends trajectories for the right reason."""

import asyncio
import re
from dataclasses import dataclass

import pytest
from transformers import AutoTokenizer

from actors.agent_loop import run_agent
from actors.engine import Completion
from actors.render import Conversation
from cluster.models import resolve_model
from envs import make_env
from envs.base import StepResult, Task
from envs.process import EnvTimeout, InProcessEnv

TASK = Task(task_id="task-0", seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("tiny-random"))


class FakeEngine:
    """Answers each prompt with `answer(prompt_text)` (+ eos), cut at max_tokens; logp of the i-th id is -(i+1)/10."""

    def __init__(self, tokenizer, answer=lambda prompt_text: "red"):
        self.tokenizer, self.answer = tokenizer, answer
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_ids: list[int], *, max_tokens: int, temperature: float) -> Completion:
        self.prompts.append(list(prompt_ids))
        text = self.answer(self.tokenizer.decode(prompt_ids))
        ids = self.tokenizer.encode(text + self.tokenizer.eos_token, add_special_tokens=False)
        finish_reason = "stop" if len(ids) <= max_tokens else "length"
        ids = ids[:max_tokens]
        return Completion(token_ids=ids, logp=[-(i + 1) / 10 for i in range(len(ids))], finish_reason=finish_reason)


@dataclass
class ScriptedEnv:
    """Gives rewards[t] at step t; done after the last reward; raises at step `fail_at`."""

    rewards: list[float]
    fail_at: int = -1
    observation: str = "Room 1. Doors: red, blue."

    def tasks(self, split: str) -> list[Task]:
        return [TASK]

    def reset(self, task: Task) -> str:
        self.t = 0
        return "Find the exit. " + self.observation

    def step(self, action: str) -> StepResult:
        if self.t == self.fail_at:
            raise KeyError("no such room")
        self.t += 1
        return StepResult(self.observation, self.rewards[self.t - 1], self.t == len(self.rewards))


def play(env, engine, tokenizer, **limits):
    """One trajectory; a plain (synchronous) env is played in this process."""
    options = dict(max_steps=8, max_tokens=16, max_trajectory_tokens=1024, temperature=1.0) | limits
    env = env if asyncio.iscoroutinefunction(env.step) else InProcessEnv(env)
    return asyncio.run(
        run_agent(env, TASK, engine, tokenizer, trajectory_id="trajectory-0", group_id="group-0", **options)
    )


def action_spans(trajectory) -> list[tuple[int, list[int]]]:
    return [(i, trajectory.tokens[i]) for i, m in enumerate(trajectory.action_mask) if m]


def test_action_mask_covers_only_sampled_tokens(tokenizer):
    engine = FakeEngine(tokenizer, answer=lambda prompt_text: "blue door")
    trajectory = play(ScriptedEnv(rewards=[0.0, 0.5, 1.0]), engine, tokenizer)
    sampled = tokenizer.encode("blue door" + tokenizer.eos_token, add_special_tokens=False)
    assert (trajectory.finish_reason, trajectory.num_steps, trajectory.outcome) == ("done", 3, 1.5)
    assert trajectory.step_rewards == [0.0, 0.5, 1.0]
    # Each prompt the engine saw is the trajectory so far; the next ids are exactly what it sampled.
    for t, prompt in enumerate(engine.prompts):
        start = len(prompt)
        assert trajectory.tokens[:start] == prompt
        assert trajectory.tokens[start : start + len(sampled)] == sampled
        # Padded: the last action ends the trajectory, with nothing after it.
        around = (trajectory.action_mask + [False])[start - 1 : start + len(sampled) + 1]
        assert around == [False] + [True] * len(sampled) + [False]
        assert trajectory.step_index[start : start + len(sampled)] == [t] * len(sampled)
        assert trajectory.behavior_logp[start : start + len(sampled)] == [-(i + 1) / 10 for i in range(len(sampled))]
    assert sum(trajectory.action_mask) == 3 * len(sampled)
    masked_out = [i for i, m in enumerate(trajectory.action_mask) if not m]
    assert all(trajectory.step_index[i] == -1 and trajectory.behavior_logp[i] == 0.0 for i in masked_out)


def two_step_tokens(tokenizer, env, role: str) -> list[int]:
    """The ids apply_chat_template gives the two steps FakeEngine plays on `env` ("red" twice), the env's
    observation in chat role `role`: what the agent loop's incremental rendering must equal."""
    messages = [{"role": "user", "content": env.reset(TASK)}, {"role": "assistant", "content": "red"}]
    messages += [{"role": role, "content": env.observation}, {"role": "assistant", "content": "red"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer.encode(text.removesuffix("\n"), add_special_tokens=False)


def test_tokens_equal_the_full_chat_template(tokenizer):
    trajectory = play(ScriptedEnv(rewards=[0.0, 1.0]), FakeEngine(tokenizer), tokenizer)
    assert trajectory.tokens == two_step_tokens(tokenizer, ScriptedEnv(rewards=[0.0, 1.0]), "user")


def test_truncated_action_gets_unmasked_eos(tokenizer):
    engine = FakeEngine(tokenizer, answer=lambda prompt_text: "red blue green yellow white black")
    trajectory = play(ScriptedEnv(rewards=[1.0]), engine, tokenizer, max_tokens=3)
    start = len(engine.prompts[0])
    assert trajectory.action_mask[start:] == [True] * 3 + [False]
    assert trajectory.tokens[-1] == tokenizer.eos_token_id
    assert trajectory.step_index[start:] == [0, 0, 0, -1]


def test_max_steps_ends_the_trajectory(tokenizer):
    trajectory = play(ScriptedEnv(rewards=[0.25] * 10), FakeEngine(tokenizer), tokenizer, max_steps=3)
    assert (trajectory.finish_reason, trajectory.num_steps, trajectory.outcome) == ("max_steps", 3, 0.75)
    assert max(trajectory.step_index) == 2
    assert trajectory.tokens[-1] == tokenizer.eos_token_id  # ends on the last action, no dangling observation


def test_max_trajectory_tokens_is_never_exceeded(tokenizer):
    env = ScriptedEnv(rewards=[0.0] * 50)
    prompt = Conversation(tokenizer, env.reset(TASK)).prompt_ids()
    engine = FakeEngine(tokenizer, answer=lambda prompt_text: "red blue")
    for limit in range(len(prompt), len(prompt) + 40):
        trajectory = play(env, engine, tokenizer, max_trajectory_tokens=limit)
        assert trajectory.finish_reason == "max_tokens"
        assert len(trajectory.tokens) <= limit
        assert trajectory.num_steps == len(trajectory.step_rewards) == max(trajectory.step_index, default=-1) + 1
    # A first prompt over the limit is kept whole, with no step taken.
    trajectory = play(env, engine, tokenizer, max_trajectory_tokens=len(prompt) - 1)
    assert (trajectory.finish_reason, trajectory.num_steps, trajectory.tokens) == ("max_tokens", 0, prompt)


def test_env_error_ends_trajectory_and_keeps_earlier_steps(tokenizer):
    trajectory = play(ScriptedEnv(rewards=[0.5, 0.25, 1.0], fail_at=2), FakeEngine(tokenizer), tokenizer)
    assert (trajectory.finish_reason, trajectory.success) == ("error", False)
    assert trajectory.error == "KeyError: 'no such room'"
    # The failed step's action stays (step_index 2), with a zero reward so per-step arrays stay aligned.
    assert trajectory.step_rewards == [0.5, 0.25, 0.0]
    assert (trajectory.num_steps, trajectory.outcome) == (3, 0.75)
    assert max(trajectory.step_index) == 2


def test_env_error_in_reset_gives_empty_error_trajectory(tokenizer):
    class Broken(ScriptedEnv):
        def reset(self, task: Task) -> str:
            raise RuntimeError("task file missing")

    trajectory = play(Broken(rewards=[1.0]), FakeEngine(tokenizer), tokenizer)
    assert (trajectory.finish_reason, trajectory.error) == ("error", "RuntimeError: task file missing")
    assert (trajectory.tokens, trajectory.num_steps, trajectory.outcome) == ([], 0, 0.0)


def test_engine_errors_propagate(tokenizer):
    class DeadEngine:
        async def generate(self, prompt_ids, *, max_tokens, temperature):
            raise RuntimeError("engine died")

    with pytest.raises(RuntimeError, match="engine died"):
        play(ScriptedEnv(rewards=[1.0]), DeadEngine(), tokenizer)


def test_corridor_open_door_policy_reaches_the_exit(tokenizer):
    def open_door(prompt_text: str) -> str:
        return re.findall(r"The (\w+) door is open", prompt_text)[-1]

    env = make_env("corridor", num_rooms=3, slip=0.0)
    trajectory = play(env, FakeEngine(tokenizer, answer=open_door), tokenizer, max_steps=6)
    assert (trajectory.finish_reason, trajectory.outcome, trajectory.num_steps) == ("done", 1.0, 3)
    assert trajectory.policy_version == 0 and trajectory.error == "" and trajectory.success is True


def test_env_timeout_ends_trajectory_with_timeout_and_keeps_earlier_steps(tokenizer):
    class SlowAtStep1(InProcessEnv):
        async def step(self, action: str) -> StepResult:
            if self.env.t == 1:
                raise EnvTimeout("env step did not answer within 2 s")
            return self.env.step(action)

    trajectory = play(SlowAtStep1(ScriptedEnv(rewards=[0.5, 1.0])), FakeEngine(tokenizer), tokenizer)
    assert (trajectory.finish_reason, trajectory.error) == ("timeout", "EnvTimeout: env step did not answer within 2 s")
    assert (trajectory.step_rewards, trajectory.outcome, trajectory.success) == ([0.5, 0.0], 0.5, False)


def test_success_is_the_final_steps_info_on_done_only_for_envs_without_the_typed_field(tokenizer):
    class Succeeds(ScriptedEnv):
        def step(self, action: str) -> StepResult:
            result = super().step(action)
            return StepResult(result.observation, result.reward, result.done, {"success": True})

    assert play(Succeeds(rewards=[0.0, 1.0]), FakeEngine(tokenizer), tokenizer).success is True
    assert play(ScriptedEnv(rewards=[0.0, 1.0]), FakeEngine(tokenizer), tokenizer).success is False  # no key
    cut = play(Succeeds(rewards=[0.0] * 5), FakeEngine(tokenizer), tokenizer, max_steps=2)
    assert (cut.finish_reason, cut.success) == ("max_steps", False)


def test_observation_renders_in_the_role_the_env_names(tokenizer):
    class ToolEnv(ScriptedEnv):
        def step(self, action: str) -> StepResult:
            result = super().step(action)
            return StepResult(result.observation, result.reward, result.done, {"role": "tool"})

    trajectory = play(ToolEnv(rewards=[0.0, 1.0]), FakeEngine(tokenizer), tokenizer)
    assert trajectory.tokens == two_step_tokens(tokenizer, ToolEnv(rewards=[0.0, 1.0]), "tool")


def test_typed_success_and_role_win_over_info(tokenizer):
    class Typed(ScriptedEnv):
        def step(self, action: str) -> StepResult:
            result = super().step(action)
            info = {"success": False, "role": "user"}  # what an older version of the env wrote: ignored
            return StepResult(result.observation, result.reward, result.done, info, success=True, role="tool")

    trajectory = play(Typed(rewards=[0.0, 1.0]), FakeEngine(tokenizer), tokenizer)
    assert trajectory.tokens == two_step_tokens(tokenizer, Typed(rewards=[0.0, 1.0]), "tool")
    assert (trajectory.finish_reason, trajectory.success) == ("done", True)
