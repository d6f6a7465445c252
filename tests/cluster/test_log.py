"""The progress line a user reads each iteration."""

from cluster.log import progress_line

METRICS = {
    "iteration": 3,
    "rollout/outcome_mean": 0.5,
    "score/progress_adv_mean": 0.01,
    "loss/kl": 0.002,
    "rollout/sustained_tokens_per_s": 7.0,
    "time/collect": 3.0,
    "time/score": 10.0,
    "time/update": 9.0,
    "time/broadcast": 0.5,
    "time/iteration": 23.0,
}


def test_tok_s_is_the_engines_generation_rate_not_the_sustained_rate():
    engines = {"rollout/engine_tokens_per_s@rollout-0": 250.0, "rollout/engine_tokens_per_s@rollout-1": 150.0}
    line = progress_line({**METRICS, **engines}, 10)
    assert line.startswith("iteration 4/10 | outcome 0.500")
    assert "| 400 tok/s |" in line  # two engines generating side by side
    assert "7 tok/s" not in line


def test_tok_s_is_a_dash_when_no_engine_stepped():
    assert "| - tok/s |" in progress_line(METRICS, 10)
