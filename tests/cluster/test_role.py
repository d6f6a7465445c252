"""Per-engine speeds from the rollout actors' cumulative counters."""

from cluster.role import engine_speeds


def stats(tokens: int, seconds: float) -> dict:
    return {"env_restarts": 0, "sampled_tokens": tokens, "step_s": seconds}


def test_engine_speeds_are_per_actor_and_per_iteration():
    counted = {}
    first = engine_speeds(counted, {0: stats(100, 2.0), 1: stats(300, 3.0)}, "rollout")
    assert first == {"rollout/engine_tokens_per_s@rollout-0": 50.0, "rollout/engine_tokens_per_s@rollout-1": 100.0}
    second = engine_speeds(counted, {0: stats(400, 4.0), 1: stats(300, 3.0)}, "rollout")
    # since the last take only: 300 tokens in 2 s; an engine that did not step since has no new value
    assert second == {"rollout/engine_tokens_per_s@rollout-0": 150.0}


def test_a_replaced_actor_counts_from_zero():
    counted = {0: stats(1000, 10.0)}
    assert engine_speeds(counted, {0: stats(60, 1.5)}, "rollout") == {"rollout/engine_tokens_per_s@rollout-0": 40.0}
    assert counted[0]["sampled_tokens"] == 60


def test_an_actor_that_did_not_answer_has_no_value_and_keeps_its_count():
    counted = {0: stats(100, 1.0), 1: stats(100, 1.0)}
    assert engine_speeds(counted, {1: stats(200, 2.0)}, "rollout") == {"rollout/engine_tokens_per_s@rollout-1": 100.0}
    assert counted[0] == stats(100, 1.0)


def test_engine_preload_adds_the_libraries_found_after_the_users_own(monkeypatch, tmp_path):
    from cluster import role

    tcmalloc, iomp = tmp_path / "libtcmalloc_minimal.so.4", tmp_path / "libiomp5.so"
    tcmalloc.write_bytes(b"")
    monkeypatch.setattr(role, "PRELOAD_LIBRARIES", ((str(tmp_path / "missing.so"), str(tcmalloc)), (str(iomp),)))
    monkeypatch.setenv("LD_PRELOAD", "/opt/own.so")
    assert role.engine_preload() == {"LD_PRELOAD": f"/opt/own.so:{tcmalloc}"}  # iomp5 is not there
    iomp.write_bytes(b"")
    monkeypatch.delenv("LD_PRELOAD")
    assert role.engine_preload() == {"LD_PRELOAD": f"{tcmalloc}:{iomp}"}
    monkeypatch.setattr(role, "PRELOAD_LIBRARIES", ((str(tmp_path / "missing.so"),),))
    assert role.engine_preload() == {}
