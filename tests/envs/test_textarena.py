"""The TextArena adapter: a known solution wins, invalid moves do not end the game, seeding, final reward."""

import pytest

pytest.importorskip("textarena")

from envs import make_env  # noqa: E402
from envs.textarena import GAMES  # noqa: E402

HANOI = ["[A C]", "[A B]", "[C B]", "[A C]", "[B A]", "[B C]", "[A C]"]  # the optimal 3-disk solution


def play(game: str, actions: list[str], seed: int = 0, **options) -> tuple[list[str], list]:
    env = make_env(f"textarena/{game}", seed=seed, **options)
    observations, results = [env.reset(env.tasks("train")[4])], []
    for action in actions:
        results.append(env.step(action))
        observations.append(results[-1].observation)
        if results[-1].done:
            break
    return observations, results


def test_optimal_tower_of_hanoi_wins_with_outcome_one():
    observations, results = play("TowerOfHanoi-v0", ["I move [A C]"] + HANOI[1:])
    assert "Tower of Hanoi with 3 disks" in observations[0] and observations[1].startswith("You moved disk 1")
    assert [r.reward for r in results] == [0.0] * 6 + [1.0] and results[-1].success is True
    assert "You solved the Tower of Hanoi puzzle" in observations[-1]


def test_invalid_moves_are_normal_steps_and_never_end_the_game():
    observations, results = play("TowerOfHanoi-v0", ["hello", "[C B]", "[C A]", "what now?"] + HANOI, max_steps=20)
    assert all("You attempted an invalid move. Reason:" in o for o in observations[1:5])
    assert not any(r.done for r in results[:4]) and results[-1].success is True


def test_max_steps_ends_the_game_with_outcome_zero():
    _, results = play("TowerOfHanoi-v0", HANOI[:3], max_steps=3)
    assert results[-1].done and results[-1].success is False and sum(r.reward for r in results) == 0.0


@pytest.mark.parametrize("game", GAMES)
def test_every_offered_game_resets_steps_and_replays_the_same(game):
    actions = ["[up]", "[1 2]", "[0 0 0 0]", "[5]", "[left]", "[1 1 1]"]
    first = play(game, actions)
    assert first[0][0] and first == play(game, actions)


def test_splits_are_disjoint_and_deterministic():
    env = make_env("textarena/Sokoban-v0", num_tasks=30)
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert train == env.tasks("train") and len(held_out) == 30
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    assert train[0].task_id.startswith("textarena/Sokoban-v0-")
