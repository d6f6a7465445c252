"""The ScienceWorld adapter: a gold path succeeds, suite variations as splits, bad actions, seeding, Java."""

import pytest

pytest.importorskip("scienceworld")

from envs import make_env  # noqa: E402
from envs.scienceworld import TASKS  # noqa: E402


def test_task_names_are_the_suites():
    from scienceworld.constants import ID2TASK

    assert TASKS == tuple(ID2TASK.values())


@pytest.mark.slow  # the JVM start and a load with the gold path: ~10 s on 2 cores
def test_gold_path_succeeds_with_outcome_one_although_the_start_state_scores():
    env = make_env("scienceworld/find-living-thing", gold_path=True, max_steps=60)
    env.reset(env.tasks("eval")[1])
    outcome, results = 0.0, []
    for action in env.gold_actions():
        results.append(env.step(action))
        outcome += results[-1].reward
        if results[-1].done:
            break
    assert results[-1].success is True and outcome == pytest.approx(1.0)
    assert results[0].reward > 0.08  # the first step's reward includes the 1/12 the start state scores


def test_splits_are_the_suites_train_and_dev_variations():
    env = make_env("scienceworld/boil")
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert [t.seed for t in train] == list(range(14)) and [t.seed for t in held_out] == list(range(14, 21))
    assert env.tasks("train") == train and train[0].task_id == "scienceworld/boil-0"


def _play(actions: list[str]) -> list[str]:
    env = make_env("scienceworld/boil", max_steps=len(actions))
    observations = [env.reset(env.tasks("train")[2])]
    for action in actions:
        result = env.step(action)
        observations.append(result.observation)
    assert result.done and result.success is False
    return observations


def test_invalid_actions_are_normal_steps_and_the_same_task_replays_the_same():
    actions = ["fly to the moon", "focus on door", "", "open door to kitchen", "go to kitchen"]
    observations = _play(actions)
    assert "open OBJ" in observations[0] and "boil water" in observations[0]
    assert observations[1] == "No known action matches that input."
    # The suite lists an ambiguous request's options in a different order each run; the adapter sorts them.
    assert observations[2].splitlines()[1:] == [
        "0: focus on door between bathroom and kitchen",
        "1: focus on door between kitchen and hallway",
        "2: focus on door between kitchen and outside",
    ]
    assert observations == _play(actions)


def test_an_ambiguity_is_answered_by_the_number_shown():
    env = make_env("scienceworld/boil")
    env.reset(env.tasks("train")[2])
    env.step("focus on door")
    result = env.step("2")
    assert result.observation == "You focus on the door between kitchen and outside."
    assert result.done and result.success is False  # focusing on the wrong thing fails the task


def test_without_java_on_path_the_error_says_java_17_is_needed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="ScienceWorld runs in a JVM and needs Java 17"):
        make_env("scienceworld/boil")


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown simplifications"):
        make_env("scienceworld/boil", simplifications="easy,fast")
    env = make_env("scienceworld/boil")
    with pytest.raises(ValueError, match="exceeds the total number of variations"):
        env.reset(type(env.tasks("train")[0])(task_id="scienceworld/boil-999", seed=999))
