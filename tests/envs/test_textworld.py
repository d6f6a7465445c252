"""The TextWorld adapter: games generated once into the cache, the walkthrough wins, bad actions, seeding."""

import pytest

pytest.importorskip("textworld")

from envs import make_env  # noqa: E402
from envs.textworld import cache_root  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache with the coin_collector game of train task 0 generated in it (tw-make: 5-15 s)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREELUNCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        env = make_env("textworld/coin_collector", max_steps=50)
        env.reset(env.tasks("train")[0])
        yield cache_root()


def play(actions: list[str], **options) -> tuple[list[str], float, dict]:
    env = make_env("textworld/coin_collector", **options)
    observations, outcome = [env.reset(env.tasks("train")[0])], 0.0
    for action in actions or env.walkthrough():
        result = env.step(action)
        observations.append(result.observation)
        outcome += result.reward
        if result.done:
            break
    return observations, outcome, result.success


@pytest.mark.slow
def test_walkthrough_wins_with_outcome_one(cache):
    observations, outcome, success = play([], max_steps=50)
    assert success is True and outcome == pytest.approx(1.0)
    assert "Valid actions: " in observations[0] and ">" not in observations[1]  # no prompt or status line
    assert "You scored 1 out of a possible 1" in observations[-1]


@pytest.mark.slow
def test_invalid_action_is_a_normal_step_and_the_same_task_replays_the_same(cache):
    actions = ["xyzzy", "eat the sky", "go west", "look"]
    observations, outcome, success = play(actions, max_steps=4)
    assert observations[1].startswith("That's not a verb I recognise.") and outcome == 0.0
    assert success is False  # max_steps ended it
    assert play(actions, max_steps=4)[0] == observations


@pytest.mark.slow
def test_games_are_cached_atomically_and_regenerate_byte_identical(cache, tmp_path, monkeypatch):
    (game,) = cache.glob("*/0/game.z8")
    assert [p.name for p in game.parent.parent.iterdir() if p.name.startswith(".")] == []  # no temp dir left
    monkeypatch.setenv("FREELUNCH_CACHE", str(tmp_path))
    env = make_env("textworld/coin_collector")
    env.reset(env.tasks("train")[0])
    (again,) = cache_root().glob("*/0/game.z8")
    assert again.relative_to(cache_root()) == game.relative_to(cache) and again.read_bytes() == game.read_bytes()


def test_splits_are_disjoint_and_deterministic_and_bad_options_name_the_tool(tmp_path, monkeypatch):
    env = make_env("textworld/cooking", num_tasks=40)
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert train == env.tasks("train") and len(held_out) == 40
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    monkeypatch.setenv("FREELUNCH_CACHE", str(tmp_path))
    bad = make_env("textworld/coin_collector", make_options=["--level", "9999"])
    with pytest.raises(RuntimeError, match="textworld: .*tw-make tw-coin_collector --level 9999.* failed"):
        bad.reset(train[0])
