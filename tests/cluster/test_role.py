"""Per-engine speeds from the rollout actors' cumulative counters."""

from cluster.role import engine_speeds


def stats(tokens: int, seconds: float) -> dict:
    return {"env_restarts": 0, "sampled_tokens": tokens, "step_s": seconds}


def test_engine_speeds_are_per_actor_and_per_iteration():
    counted = {}
    first = engine_speeds(counted, [stats(100, 2.0), stats(300, 3.0)], "rollout")
    assert first == {"rollout/engine_tokens_per_s@rollout-0": 50.0, "rollout/engine_tokens_per_s@rollout-1": 100.0}
    second = engine_speeds(counted, [stats(400, 4.0), stats(300, 3.0)], "rollout")
    # since the last take only: 300 tokens in 2 s; an engine that did not step since has no new value
    assert second == {"rollout/engine_tokens_per_s@rollout-0": 150.0}


def test_a_replaced_actor_counts_from_zero():
    counted = {0: stats(1000, 10.0)}
    assert engine_speeds(counted, [stats(60, 1.5)], "rollout") == {"rollout/engine_tokens_per_s@rollout-0": 40.0}
    assert counted[0]["sampled_tokens"] == 60
