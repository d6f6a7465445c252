"""The corridor env: splits, determinism, stochastic transitions, parsing, bad input."""

import pytest

from envs import available, make_env


def test_train_and_eval_splits_are_disjoint_and_deterministic():
    env = make_env("corridor", num_tasks=64)
    train, again, held_out = env.tasks("train"), env.tasks("train"), env.tasks("eval")
    assert train == again and len(train) == 64 and len(held_out) == 64
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}


def _play(seed: int, actions: list[str]):
    env = make_env("corridor", seed=seed)
    task = env.tasks("train")[3]
    transcript = [env.reset(task)]
    for action in actions:
        result = env.step(action)
        transcript.append((result.observation, result.reward, result.done))
        if result.done:
            break
    return transcript


def _open_door(observation: str) -> str:
    return observation.rsplit("The ", 1)[1].split(" door is open")[0]


def test_same_seed_same_trajectory():
    assert _play(7, ["red", "blue", "green", "white"]) == _play(7, ["red", "blue", "green", "white"])


def test_taking_the_open_door_reaches_the_exit_despite_slips():
    env = make_env("corridor", seed=0, max_steps=50)
    outcomes, slips = [], 0
    for task in env.tasks("train")[:20]:
        observation, done, rewards = env.reset(task), False, []
        while not done:
            result = env.step(f"I take the {_open_door(observation)} door")
            slips += "icy" in result.observation
            observation, done = result.observation, result.done
            rewards.append(result.reward)
        outcomes.append((sum(rewards), result.success))
    assert outcomes == [(1.0, True)] * 20  # one reward of 1/num_rooms per room passed
    assert slips > 0  # transitions are stochastic


def test_wrong_and_unparseable_actions_are_normal_steps():
    env = make_env("corridor", seed=0, max_steps=3)
    observation = env.reset(env.tasks("train")[0])
    doors = observation.split("Doors: ")[1].split(".")[0].split(", ")
    wrong = next(d for d in doors if d != _open_door(observation))
    first = env.step(wrong)
    assert "locked" in first.observation and not first.done and first.reward == 0.0
    second = env.step("I would like a sandwich")
    assert "not a door here" in second.observation and not second.done
    third = env.step(wrong)
    assert third.done and third.reward == 0.0 and "Time is up" in third.observation
    assert (third.success, third.info) == (False, {})


def test_unknown_env_lists_available():
    with pytest.raises(ValueError, match="available: " + ", ".join(available())):
        make_env("nethack")
