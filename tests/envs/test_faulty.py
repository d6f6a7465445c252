"""The fault-injection env: `faulty/<fault>` names, the share of faulty trajectories, bad options."""

import pytest

from envs import available, make_env
from envs.base import Task


def test_named_fault_hits_about_p_of_the_trajectories_at_at_step():
    env = make_env("faulty/raise", seed=3)
    failed_at = []
    for i in range(400):
        env.reset(Task(f"t-{i}", i))
        for step in range(env.length):
            try:
                env.step("go")
            except RuntimeError as error:
                assert str(error) == f"faulty: injected error at step {step}"
                failed_at.append(step)
                break
    assert set(failed_at) == {1} and 0.2 < len(failed_at) / 400 < 0.3  # defaults: at_step 1, p 0.25


def test_healthy_trajectory_succeeds_after_length_steps():
    env = make_env("faulty", length=2)
    env.reset(Task("t", 0))
    first, last = env.step("a"), env.step("b")
    assert (first.done, last.done, last.success, first.reward + last.reward) == (False, True, True, 1.0)


def test_every_fault_has_a_name_and_bad_options_are_rejected():
    assert {n for n in available() if n.startswith("faulty")} == {
        "faulty", "faulty/raise", "faulty/crash", "faulty/segfault", "faulty/hang"
    }  # fmt: skip
    with pytest.raises(ValueError, match="fault must be one of none, raise, crash, segfault, hang, got 'boom'"):
        make_env("faulty", fault="boom")
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 2"):
        make_env("faulty/crash", p=2)
