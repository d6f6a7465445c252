"""Env processes: a crash, a hang or an exception ends only its own trajectory, and no child is left behind."""

import asyncio
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from actors.agent_loop import run_agent
from actors.engine import Completion
from envs import make_env
from envs.base import StepResult, Task, check_step
from envs.process import EnvCrash, EnvFailure, EnvPool, EnvProcess, EnvRaised, EnvTimeout, InProcessEnv

TASK = Task(task_id="task-0", seed=0)
REPO = Path(__file__).resolve().parents[2]
CORRIDOR = {"num_rooms": 3, "slip": 0.5, "max_steps": 6, "num_tasks": 16}


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def started(**timeouts) -> EnvProcess:
    return await EnvProcess.start(**({"step_timeout_s": 1.0, "reset_timeout_s": 1.0} | timeouts))


def test_env_process_replies_like_the_env_in_process():
    async def play(env, seed: int) -> list:
        transcript = []
        for task in make_env("corridor", **CORRIDOR).tasks("train")[:2]:  # two trajectories, one env
            if isinstance(env, EnvProcess):
                env.make("corridor", seed, CORRIDOR)
            transcript.append(await env.reset(task))
            for action in ["purple", "red", "blue", "green", "yellow", "white"]:
                result = await env.step(action)
                transcript.append(result)
                if result.done:
                    break
        return transcript

    async def main():
        process = await started()
        try:
            return await play(process, seed=7), process.broken
        finally:
            await process.close()

    in_child, broken = run(main())
    assert in_child == run(play(InProcessEnv(make_env("corridor", seed=7, **CORRIDOR)), seed=7))
    assert not broken and len(in_child) > 4


def test_env_prints_do_not_corrupt_the_replies(capfd):
    async def main():
        process = await started()
        process.make("faulty", 0, {"chatter": True, "length": 2})
        observation = await process.reset(TASK)
        results = [await process.step("go"), await process.step("go")]
        await process.close()
        return observation, results

    observation, results = run(main())
    assert observation.startswith("Task task-0") and [r.done for r in results] == [False, True]
    assert (results[1].success, results[1].info) == (True, {})
    assert "this line goes to stdout" in capfd.readouterr().err  # the env's stdout reaches our stderr


@pytest.mark.parametrize(
    "fault, error, message",
    [
        ("raise", EnvRaised, r"^RuntimeError: faulty: injected error at step 1 \(raised by the env in step\)$"),
        ("crash", EnvCrash, r"died during step \(exit code 3\); its last output: faulty: injected crash at step 1"),
        ("segfault", EnvCrash, r"died during step \(killed by signal SIGSEGV\); its last output: .*Segmentation"),
        ("hang", EnvTimeout, r"^env step did not answer within 1 s; its process \d+ was killed$"),
    ],
)
def test_each_fault_raises_its_error_and_breaks_the_instance(fault, error, message):
    async def main():
        process = await started()
        process.make("faulty", 0, {"fault": fault, "at_step": 1, "p": 1.0})
        await process.reset(TASK)
        first = await process.step("go")
        with pytest.raises(error, match=message) as caught:
            await process.step("go")
        with pytest.raises(EnvFailure, match="broken by an earlier failure"):
            await process.step("go")
        await process.close()
        return first, caught.value, process

    first, _, process = run(main())
    assert first.reward == pytest.approx(1 / 3) and process.broken and not alive(process.pid)


def test_hang_in_reset_times_out_under_reset_timeout():
    async def main():
        process = await started(reset_timeout_s=1.5)
        process.make("faulty", 0, {"fault": "hang", "at_step": -1, "p": 1.0})
        start = time.monotonic()
        with pytest.raises(EnvTimeout, match=r"env reset did not answer within 1.5 s"):
            await process.reset(TASK)
        return time.monotonic() - start, process

    elapsed, process = run(main())
    assert 1.5 <= elapsed < 5 and not alive(process.pid)


def test_a_reply_that_came_in_while_the_event_loop_was_held_is_not_a_timeout():
    """A long engine step holds the rollout actor's event loop past an env's step limit; the env answered in
    time, and its reply is read once the loop turns again, not thrown away with the process."""

    async def main():
        process = await started(step_timeout_s=0.5)
        process.make("corridor", 0, CORRIDOR)
        await process.reset(TASK)
        call = asyncio.ensure_future(process.step("red"))
        await asyncio.sleep(0.05)  # the request is out; the env answers within milliseconds
        time.sleep(1.5)  # an engine step: the loop is held three times the limit
        result = await call
        broken = process.broken
        await process.close()
        return result, broken

    result, broken = run(main())
    assert result.observation.startswith("That is not a door here") and not broken


def test_bad_env_name_and_options_are_env_errors():
    async def main():
        process = await started()
        process.make("nope", 0, {})
        with pytest.raises(EnvRaised, match=r"EnvSpecError: unknown env 'nope'; available: corridor"):
            await process.reset(TASK)
        await process.close()
        with pytest.raises(TypeError, match="env options for 'faulty' must be JSON values"):
            process.make("faulty", 0, {"fault": object()})

    run(main())


@pytest.mark.parametrize(
    "result, message",
    [
        (StepResult("ok", math.nan, False), "step returned reward nan (float); reward must be a finite number"),
        (StepResult("ok", "1.0", False), "step returned reward '1.0' (str); reward must be a finite number"),
        (StepResult("ok", True, False), "step returned reward True (bool); reward must be a finite number"),
        (StepResult("ok", 1.0, 1), "step returned done 1 (int); done must be a bool"),
        (StepResult(None, 1.0, False), "step returned observation None (NoneType); observation must be a str"),
        (
            StepResult("ok", 1.0, True, {"seen": {1}}),
            "step returned info that is not JSON-serialisable: Object of type set is not JSON serializable",
        ),
        (StepResult("ok", 1.0, False, role="system"), "step returned role 'system' (str); role must be one of user"),
        (StepResult("ok", 1.0, False, {"role": "assistant"}), "step returned role 'assistant' (str); role must be one"),
        (StepResult("ok", 1.0, True, success="yes"), "step returned success 'yes' (str); success must be a bool"),
        ("ok", "step returned 'ok' (str); it must return an envs.base.StepResult"),
    ],
)
def test_malformed_step_results_are_rejected_naming_the_field(result, message):
    with pytest.raises(ValueError) as caught:
        check_step(result)
    assert str(caught.value).startswith(message)
    with pytest.raises(ValueError, match=re.escape(message)):
        asyncio.run(InProcessEnv(ScriptedReply(result)).step("go"))  # the baseline checks as the worker does


class ScriptedReply:
    """An env whose every step returns `result` as it is."""

    def __init__(self, result):
        self.result = result

    def step(self, action: str):
        return self.result


@pytest.mark.parametrize("reply, found", [("nan", "nan (float)"), ("text", "'0.3333333333333333' (str)")])
def test_a_malformed_reward_ends_only_its_trajectory_as_an_env_error(tiny_model_dir, reply, found):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    limits = dict(max_steps=4, max_tokens=16, max_trajectory_tokens=2048, temperature=1.0)

    async def main():
        process = await started()
        process.make("faulty", 0, {"reply": reply})
        await process.reset(TASK)
        with pytest.raises(EnvRaised) as caught:
            await process.step("go")
        process = await started()
        process.make("faulty", 0, {"reply": reply})
        engine = DoorEngine(tokenizer)
        trajectory = await run_agent(process, TASK, engine, tokenizer, trajectory_id="t", group_id="g", **limits)
        await process.close()
        return caught.value, trajectory

    error, trajectory = run(main())
    message = f"ValueError: step returned reward {found}; reward must be a finite number (raised by the env in step)"
    assert str(error) == message
    assert (trajectory.finish_reason, trajectory.error) == ("error", f"EnvRaised: {message}")
    assert trajectory.step_rewards == [0.0]


def test_an_env_that_puts_success_in_info_works_end_to_end(tiny_model_dir):
    """Envs written before the typed fields (success in info["success"]) keep working unchanged."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    options = {"reply": "info", "length": 2}
    limits = dict(max_steps=4, max_tokens=16, max_trajectory_tokens=2048, temperature=1.0)

    async def main():
        process = await started()
        process.make("faulty", 0, options)
        await process.reset(TASK)
        results = [await process.step("go"), await process.step("go")]
        engine = DoorEngine(tokenizer)
        trajectory = await run_agent(process, TASK, engine, tokenizer, trajectory_id="t", group_id="g", **limits)
        await process.close()
        return results, trajectory

    results, trajectory = run(main())
    assert results[1] == StepResult("All done.", 0.5, True, {"success": True})  # as the env returned it
    assert (trajectory.finish_reason, trajectory.success, trajectory.outcome) == ("done", True, 1.0)


class DoorEngine:
    """Takes the open door of the corridor (any word for the faulty env); logp -0.5 per id; yields to the loop."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    async def generate(self, prompt_ids: list[int], *, max_tokens: int, temperature: float) -> Completion:
        await asyncio.sleep(0.01)
        doors = re.findall(r"The (\w+) door is open", self.tokenizer.decode(prompt_ids))
        ids = self.tokenizer.encode((doors[-1] if doors else "go") + self.tokenizer.eos_token, add_special_tokens=False)
        return Completion(token_ids=ids, logp=[-0.5] * len(ids), finish_reason="stop")


def test_faulty_trajectories_fail_alone_among_healthy_ones(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine = DoorEngine(tokenizer)
    faults = {
        "raise": ("error", "EnvRaised: RuntimeError: faulty: injected error at step 1"),
        "crash": ("error", "EnvCrash: env process"),
        "segfault": ("error", "EnvCrash: env process"),
        "hang": ("timeout", "EnvTimeout: env step did not answer within 1.5 s"),
    }
    tasks = make_env("corridor", **CORRIDOR).tasks("train")[:4]

    async def play(env, name: str, seed: int, options: dict, task: Task = TASK):
        if isinstance(env, EnvProcess):
            env.make(name, seed, options)
        limits = dict(max_steps=6, max_tokens=16, max_trajectory_tokens=2048, temperature=1.0)
        return await run_agent(env, task, engine, tokenizer, trajectory_id=name, group_id="g", **limits)

    async def in_pool(pool: EnvPool, *args, **kwargs):
        async with pool.env() as env:
            return await play(env, *args, **kwargs), env.pid

    async def main():
        pool = EnvPool(step_timeout_s=1.5, reset_timeout_s=5.0)
        try:
            healthy = [in_pool(pool, "corridor", seed, CORRIDOR, task) for seed, task in enumerate(tasks)]
            faulty = [in_pool(pool, "faulty", 0, {"fault": fault, "at_step": 1, "p": 1.0}) for fault in faults]
            played = await asyncio.gather(*healthy, *faulty)
            restarts, pids = pool.restarts, [pid for _, pid in played]
            again, pid = await in_pool(pool, "faulty", 0, {})
            return played, restarts, pids, again, pid, pool.pids()
        finally:
            await pool.close()

    played, restarts, pids, again, again_pid, open_pids = run(main())
    for (trajectory, _), (seed, task) in zip(played, enumerate(tasks)):
        reference = run(play(InProcessEnv(make_env("corridor", seed=seed, **CORRIDOR)), "corridor", seed, {}, task))
        assert trajectory == reference and trajectory.finish_reason in ("done", "max_steps")
    for (trajectory, _), (reason, message) in zip(played[len(tasks) :], faults.values()):
        assert (trajectory.finish_reason, trajectory.num_steps) == (reason, 2)
        assert trajectory.step_rewards == [pytest.approx(1 / 3), 0.0] and trajectory.error.startswith(message)
    assert restarts == len(faults)
    assert (again.finish_reason, again.success, again.outcome) == ("done", True, pytest.approx(1.0))
    assert again_pid in open_pids and not set(pids[len(tasks) :]) & set(open_pids)  # a healthy child took it
    assert not any(alive(pid) for pid in pids + open_pids)


def test_child_exits_when_its_parent_dies_even_while_the_env_hangs():
    parent = f"""
import asyncio, sys
sys.path.insert(0, {str(REPO)!r})
from envs.base import Task
from envs.process import EnvProcess

async def main():
    process = await EnvProcess.start(step_timeout_s=600)
    process.make("faulty", 0, {{"fault": "hang", "at_step": 0, "p": 1.0}})
    await process.reset(Task("t", 0))
    print(process.pid, flush=True)
    await process.step("go")

asyncio.run(main())
"""
    with subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True) as proc:
        child = int(proc.stdout.readline())
        assert alive(child)
        proc.kill()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_pool_starts_at_most_max_processes_and_the_rest_wait():
    async def run():
        pool = EnvPool(max_processes=2)
        in_play, most = 0, 0

        async def trajectory():
            nonlocal in_play, most
            async with pool.env() as env:
                in_play += 1
                most = max(most, in_play)
                env.make("corridor", 0, {})
                await asyncio.sleep(0.05)
                in_play -= 1

        await asyncio.gather(*(trajectory() for _ in range(5)))
        started = len(pool.pids())
        await pool.close()
        return most, started

    assert asyncio.run(run()) == (2, 2)
