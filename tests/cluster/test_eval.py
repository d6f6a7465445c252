"""`freelunch eval`: interval math against hand-computed values, bad input, and a real run on the tiny model."""

import json
import statistics

import pytest

from actors.trajectory import ROLLOUT_SCHEMA, ragged, read_parquet
from cluster.cli import main
from cluster.eval import success_interval, t_interval, t_quantile, wilson_interval
from envs import available, make_env

# What the tiny random model needs to run in little memory (as in cluster/configs/cpu_smoke.toml).
TINY = ["actors.dtype=float32", "actors.kv_cache_gb=0.25", "actors.max_trajectory_tokens=512", "actors.max_tokens=8"]


def test_wilson_interval_matches_hand_computed_values():
    # 7/10: center (0.7 + z²/20) / (1 + z²/10) = 0.64449, half z·sqrt(0.021 + z²/400) / (1 + z²/10) = 0.24772
    assert wilson_interval(7, 10) == pytest.approx((0.39677, 0.89221), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)


def test_t_quantile_matches_the_t_table():
    table = {1: 12.7062, 2: 4.3027, 4: 2.7764, 9: 2.2622, 30: 2.0423, 100: 1.9840}
    assert {df: round(t_quantile(0.975, df), 4) for df in table} == table


def test_t_interval_matches_hand_computed_values():
    # mean 0.5, sample sd sqrt(0.125 / 4) = 0.176777, t(0.975, 4) = 2.776445: half 2.776445 * 0.176777 / sqrt(5)
    assert t_interval([0.25, 0.5, 0.75, 0.5, 0.5]) == pytest.approx((0.280503, 0.719497), abs=1e-6)
    assert t_interval([0.0, 1.0]) == (0.0, 1.0)  # clipped: half = 12.7 * 0.707 / 1.41
    with pytest.raises(ValueError, match="at least two"):
        t_interval([0.5])


def test_success_interval_treats_tasks_as_the_independent_draws():
    rate, interval, method = success_interval(["a", "b", "c"], [True, False, False])
    assert (rate, interval, method) == (1 / 3, wilson_interval(1, 3), method)
    assert method == "Wilson score interval over 3 trajectories, one per task"
    rate, interval, method = success_interval(["a", "a", "b", "b", "c", "c"], [True, True, True, False, False, False])
    assert (rate, interval) == (0.5, t_interval([1.0, 0.5, 0.0]))
    assert method == "t interval over the success rates of 3 tasks"
    # Equal per-task rates give a t interval of no width: Wilson over the 2 tasks, (0, 0.65762) by hand.
    rate, interval, method = success_interval(["a", "a", "b", "b"], [False] * 4)
    assert rate == 0.0 and interval == pytest.approx((0.0, 0.65762), abs=1e-5)
    assert method == "Wilson score interval over 2 tasks (equal per-task success rates)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "nope"], "env.name: unknown env 'nope'; available: " + ", ".join(available())),
        (["--num-tasks", "513"], "--num-tasks must be in 1..512: the eval split of corridor has 512 tasks"),
        (["--num-tasks", "0"], "--num-tasks must be in 1..512"),
        (["--group-size", "0"], "--group-size must be at least 1, got 0"),
        (["learner.lr=1e-5"], "eval takes seed, env.* and actors.* settings; 'learner.lr=1e-5' is not one of them"),
        (["env.name=mdp"], "give the environment with --env"),
        (["actors.temperature=hot"], "actors.temperature: expected float, got 'hot'"),
    ],
)
def test_bad_input_fails_before_the_engine_starts(argv, message, tiny_model_dir, tmp_path, capsys):
    base = ["eval", "--policy", tiny_model_dir, "--env", "corridor", "--out", str(tmp_path / "out")]
    assert main([*base, *argv]) == 2  # a repeated flag takes the later value
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_policy_directory_names_the_path(tmp_path, capsys):
    missing = tmp_path / "run" / "policy"
    assert main(["eval", "--policy", str(missing), "--env", "corridor"]) == 2
    assert f"model directory {missing} has no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_writes_trajectories_and_a_summary_consistent_with_them(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--policy", tiny_model_dir, "--env", "corridor", "--num-tasks", "3", "--group-size", "2"]
    assert main([*argv, "--out", str(out), *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "trajectories.parquet"]  # no .tmp left
    table = read_parquet(out / "trajectories.parquet", schema=ROLLOUT_SCHEMA)
    assert table.schema.equals(ROLLOUT_SCHEMA, check_metadata=True)  # what training's rollout actors write
    tasks = [t.task_id for t in make_env("corridor").tasks("eval")[:3]]
    assert table.column("task_id").to_pylist() == [t for t in tasks for _ in range(2)]
    assert table.column("trajectory_id").to_pylist() == [f"{t}-{j}" for t in tasks for j in range(2)]
    assert all(m.any() for m in ragged(table, "action_mask"))  # the policy acted

    summary = json.loads((out / "summary.json").read_text())
    rows = table.to_pylist()
    per_task = [statistics.fmean(r["success"] for r in rows if r["task_id"] == t) for t in tasks]
    finish = [r["finish_reason"] for r in rows]
    assert summary["success_rate"] == pytest.approx(statistics.fmean(per_task))
    assert summary["outcome_mean"] == pytest.approx(statistics.fmean(r["outcome"] for r in rows))
    assert summary["steps_mean"] == pytest.approx(statistics.fmean(r["num_steps"] for r in rows))
    assert summary["finish_reasons"] == {reason: finish.count(reason) for reason in set(finish)}
    assert (summary["num_trajectories"], summary["num_tasks"], summary["group_size"]) == (6, 3, 2)
    low, high = summary["success_interval_95"]
    assert 0.0 <= low <= summary["success_rate"] <= high <= 1.0 and high > low
    assert "3 tasks" in summary["interval_method"] and summary["env_restarts"] == 0
    assert f"success {summary['success_rate']:.3f}  95% [{low:.3f}, {high:.3f}]" in capsys.readouterr().out
