"""The text MDP: its model as data, determinism, stochastic transitions, rewards, parsing, bad input."""

import pytest

from envs import available, make_env
from envs.mdp import TextMDP


def test_model_is_a_valid_mdp_fixed_by_mdp_seed():
    env = make_env("mdp", num_states=4, num_actions=3, max_steps=3)
    assert "mdp" in available() and env.horizon == 3 and env.action_words == ("red", "blue", "green")
    assert len(env.transitions) == 4 and all(len(row) == 3 and len(row[0]) == 4 for row in env.transitions)
    assert all(abs(sum(p) - 1.0) < 1e-12 and min(p) >= 0 for row in env.transitions for p in row)
    assert all(0.0 <= r <= 1.0 for row in env.rewards for r in row) and len(env.rewards[0]) == 3
    same, other = TextMDP(seed=5, num_states=4), TextMDP(seed=6, num_states=4, mdp_seed=1)
    # The luck seed does not change the model; mdp_seed does.
    assert same.transitions == env.transitions and same.rewards == env.rewards
    assert other.transitions != env.transitions


def test_train_and_eval_splits_are_disjoint_and_cover_every_start_state():
    env = make_env("mdp", num_tasks=20)
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert train == env.tasks("train") and len(train) == len(held_out) == 20
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    assert {env.reset(task).split(",")[0] for task in train} == {f"state {s}" for s in range(env.num_states)}


def _play(seed: int, actions: list[str]):
    env = make_env("mdp", seed=seed)
    transcript = [env.reset(env.tasks("train")[2])]
    for action in actions:
        result = env.step(action)
        transcript.append((result.observation, result.reward, result.done, result.info["next_state"]))
    return transcript


def test_same_seed_same_trajectory():
    assert _play(7, ["red", "blue", "green"]) == _play(7, ["red", "blue", "green"])


def test_transitions_are_stochastic_and_follow_the_model():
    env = make_env("mdp", seed=0, max_steps=1)
    task = env.tasks("train")[0]
    start = task.seed % env.num_states
    counts = [0] * env.num_states
    for _ in range(4000):
        env.reset(task)
        counts[env.step("blue").info["next_state"]] += 1
    assert sum(c > 0 for c in counts) >= 2  # the same (state, action) leads to different states
    for count, p in zip(counts, env.transitions[start][1]):
        assert abs(count / 4000 - p) < 0.03


def test_rewards_and_observations_are_as_specified():
    env = make_env("mdp", seed=1, max_steps=3)
    observation = env.reset(env.tasks("train")[0])
    assert observation == "state 0, step 1 of 3. actions: red, blue, green"
    first = env.step("I press GREEN.")
    assert first.reward == env.rewards[0][2] and first.info == {"state": 0, "action": 2, "next_state": env.state}
    assert not first.done and first.observation.endswith(f"state {env.state}, step 2 of 3. actions: red, blue, green")
    second = env.step("red")
    assert second.reward == env.rewards[first.info["next_state"]][0] and not second.done
    third = env.step("blue")
    assert third.done and third.observation.endswith("The end.")


def test_unparseable_action_is_a_normal_step_with_reward_zero():
    env = make_env("mdp", max_steps=2)
    env.reset(env.tasks("train")[1])
    state = env.state
    result = env.step("I would like a sandwich")
    assert result.reward == 0.0 and not result.done and "not an action here" in result.observation
    assert env.state == state and env.t == 1 and result.info["action"] is None
    assert env.parse("Blue, I think") == 1 and env.parse("redness") is None


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="num_actions"):
        TextMDP(num_actions=5)
    with pytest.raises(ValueError, match="single words"):
        TextMDP(action_words=("go left", "right"), num_actions=2)
