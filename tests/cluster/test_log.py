"""The progress line a user reads each iteration, the evaluation's line, and what a resume keeps of metrics.jsonl."""

import json

from cluster.log import eval_line, forget_from, progress_line

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


def test_an_evaluation_line_says_which_policy_and_its_interval():
    line = eval_line(
        {
            "iteration": 4,
            "eval/success_rate": 0.25,
            "eval/success_interval_low": 0.1,
            "eval/success_interval_high": 0.5,
            "eval/num_trajectories": 8,
            "eval/outcome_mean": 0.3,
            "eval/steps_mean": 2.5,
            "eval/time_s": 12.0,
        },
        10,
    )
    assert line == (
        "eval after 4/10 iterations | success 0.250 95% [0.100, 0.500] over 8 tasks | outcome 0.300 | steps 2.50 "
        "| 12.0s"
    )


def test_a_resume_keeps_the_evaluation_of_the_policy_it_resumes_from(tmp_path):
    lines = [
        {"iteration": 0},
        {"iteration": 1},
        {"iteration": 2, "eval/success_rate": 0.5},  # of the policy after 2 iterations: the checkpoint's
        {"iteration": 2},
        {"iteration": 3},
        {"iteration": 4, "eval/success_rate": 0.7},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    forget_from(tmp_path / "metrics.jsonl", 2)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:3]
