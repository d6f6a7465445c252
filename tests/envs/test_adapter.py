"""What the suite adapters share: names, the missing-extra error, action matching, score -> reward."""

import sys

import pytest

from envs import SUITES, available, make_env
from envs.adapter import Progress, listed_actions, match_action, with_actions


def test_every_suite_game_is_an_available_name():
    names = available()
    assert {"textworld_express/coin", "scienceworld/boil", "textworld/coin_collector"} <= set(names)
    assert "textarena/TowerOfHanoi-v0" in names and len(names) == len(set(names))
    assert all(f"{suite}/{game}" in names for suite, games in SUITES.items() for game in games)


@pytest.mark.parametrize("name", ["textworld_express/zork", "scienceworld", "textarena/Wordle-v0", "gem/Sudoku"])
def test_unknown_suite_game_lists_available(name):
    with pytest.raises(ValueError, match="unknown env .*available: corridor, mdp"):
        make_env(name)


@pytest.mark.parametrize(
    "name, module",
    [
        ("textworld_express/coin", "textworld_express"),
        ("scienceworld/boil", "scienceworld"),
        ("textworld/coin_collector", "textworld"),
        ("textarena/TowerOfHanoi-v0", "textarena"),
    ],
)
def test_missing_extra_names_the_pip_extra(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    with pytest.raises(ImportError, match=rf"pip install 'freelunch\[{module}\]'"):
        make_env(name)


def test_match_action_reads_a_valid_action_through_a_small_models_wrapping():
    valid = ["move north", "take coin"]
    assert match_action('  "Take coin."\nbecause it is there', valid) == "take coin"
    assert match_action("\n`move NORTH`", valid) == "move north"
    assert match_action("dance wildly\nthen sleep", valid) == "dance wildly"
    assert match_action("I will take coin, then move north.", valid) == "take coin"
    assert match_action("Let me look around first", ["look", "look around", "go west"]) == "look around"
    assert match_action("take coins", valid) == "take coins"  # whole words only
    text = "You see a coin.\nValid actions: move north, take coin. Answer with one of them."
    assert with_actions("You see a coin. ", valid, True) == text and listed_actions(text) == valid
    assert with_actions("You see a coin. ", valid, False) == "You see a coin."
    twice = with_actions("Two papayas.", ["eat papaya", "look", "eat papaya"], True)
    assert listed_actions(twice) == ["eat papaya", "look"]


def test_progress_rewards_sum_to_the_final_clamped_score():
    progress = Progress(max_steps=4)
    steps = [progress.advance(score) for score in (0.25, 0.25, 1.0, -1.0)]
    assert [reward for reward, _ in steps] == [0.25, 0.0, 0.75, -1.0]
    assert sum(reward for reward, _ in steps) == 0.0 and [out for _, out in steps] == [False, False, False, True]
    with pytest.raises(ValueError, match="max_steps"):
        Progress(max_steps=0)
