"""The TextWorldExpress adapter: gold paths succeed, suite folds as splits, bad actions, seeding, one JVM."""

import random

import pytest

pytest.importorskip("textworld_express")

from envs import make_env  # noqa: E402
from envs.adapter import listed_actions  # noqa: E402
from envs.textworld_express import _jvm  # noqa: E402


def replay_gold(env, task) -> tuple[float, dict]:
    """Play the suite's gold action sequence; returns (outcome, the last step's success)."""
    env.reset(task)
    outcome = 0.0
    for action in env.gold_actions():
        result = env.step(action)
        outcome += result.reward
        if result.done:
            break
    return outcome, result.success


@pytest.mark.parametrize("game", ["coin", "cookingworld", "twc", "arithmetic"])
def test_gold_action_sequence_succeeds_with_outcome_one(game):
    env = make_env(f"textworld_express/{game}", gold_path=True, max_steps=100)
    outcome, success = replay_gold(env, env.tasks("train")[5])
    assert success is True and outcome == pytest.approx(1.0)


def test_splits_are_the_suites_train_and_dev_folds():
    env = make_env("textworld_express/coin", num_tasks=50)
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert train == env.tasks("train") and len(train) == len(held_out) == 50
    assert all(t.seed < 1000 for t in train) and all(10000 <= t.seed < 11000 for t in held_out)
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    assert train[0].task_id == "textworld_express/coin-0"


def test_invalid_action_is_a_normal_step_that_says_so():
    env = make_env("textworld_express/coin")
    observation = env.reset(env.tasks("eval")[0])
    assert "find the coin" in observation and "Valid actions: " in observation
    result = env.step("dance on the table")
    assert not result.done and result.reward == 0.0
    assert result.observation.startswith("Unknown action") and "Valid actions: " in result.observation


def _play(seed: int) -> list[str]:
    env = make_env("textworld_express/cookingworld", seed=seed, max_steps=8)
    observations = [env.reset(env.tasks("train")[3])]
    luck = random.Random(0)
    while True:
        result = env.step(luck.choice(listed_actions(observations[-1])))
        observations.append(result.observation)
        if result.done:
            return observations


def test_same_seed_and_task_give_the_same_trajectory():
    assert _play(1) == _play(1)


def test_max_steps_ends_the_trajectory_and_observations_hide_actions_when_asked():
    env = make_env("textworld_express/coin", max_steps=2, list_actions=False)
    assert "Valid actions" not in env.reset(env.tasks("train")[0])
    assert not env.step("look around").done
    assert env.step("look around").success is False


def test_instances_share_one_jvm_and_interleave_their_games():
    first = make_env("textworld_express/coin", gold_path=True, max_steps=100)
    second = make_env("textworld_express/coin", gold_path=True, max_steps=100)
    first.reset(first.tasks("train")[7])
    second.reset(second.tasks("train")[8])
    plans = [first.gold_actions(), second.gold_actions()]
    results = {0: [], 1: []}
    for step in range(max(map(len, plans))):
        for i, env in enumerate((first, second)):
            if step < len(plans[i]):
                results[i].append(env.step(plans[i][step]))
    assert all(sum(r.reward for r in rs) == pytest.approx(1.0) and rs[-1].success for rs in results.values())
    assert _jvm.cache_info().currsize == 1


def test_bad_game_params_name_the_game():
    with pytest.raises(ValueError, match="textworld_express/coin: bad game_params.*Unrecognized property name"):
        make_env("textworld_express/coin", game_params="bogus=3")
    env = make_env("textworld_express/coin", game_params="numLocations=banana")  # the suite accepts, then fails
    with pytest.raises(ValueError, match=r"textworld_express/coin \(numLocations=banana\): .*not initialized"):
        env.reset(env.tasks("train")[0])


def test_without_java_on_path_the_error_says_java_17_is_needed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="TextWorldExpress runs in a JVM and needs Java 17"):
        make_env("textworld_express/coin")
