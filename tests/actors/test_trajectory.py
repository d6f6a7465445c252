"""The trajectory record survives Arrow IPC and Parquet with every column and exact types."""

import numpy as np
import pyarrow as pa
import pytest

from actors.trajectory import (
    ROLLOUT_SCHEMA,
    SCORED_SCHEMA,
    Trajectory,
    concat,
    from_ipc,
    ragged,
    read_parquet,
    to_ipc,
    to_table,
    with_columns,
    write_parquet,
)


def make_trajectory(i: int, num_steps: int) -> Trajectory:
    """Prompt of 3 ids, then per step 2 action ids and 2 observation ids."""
    tokens, mask, step_index, logp = [7, 8, 9], [False] * 3, [-1] * 3, [0.0] * 3
    for t in range(num_steps):
        tokens += [100 + t, 200 + t, 1, 2]
        mask += [True, True, False, False]
        step_index += [t, t, -1, -1]
        logp += [-0.5 - t, -0.25, 0.0, 0.0]
    return Trajectory(
        trajectory_id=f"trajectory-{i}", task_id=f"task-{i // 2}", group_id=f"group-{i // 2}", policy_version=i,
        tokens=tokens, action_mask=mask, step_index=step_index, behavior_logp=logp,
        step_rewards=[0.0] * (num_steps - 1) + [1.0] if num_steps else [], outcome=float(num_steps > 0),
        num_steps=num_steps, finish_reason="done" if i % 2 else "error", error="" if i % 2 else "KeyError: 'x'",
        success=i % 2 == 1 and num_steps > 0,
    )  # fmt: skip


def scored_table(num_rows: int = 4) -> pa.Table:
    table = to_table([make_trajectory(i, num_steps=i % 3) for i in range(num_rows)])
    ref_logp = [np.full(len(tokens), -1.5, np.float32) for tokens in ragged(table, "tokens")]
    per_step = [np.arange(n, dtype=np.float64) / 4 for n in table.column("num_steps").to_pylist()]
    return with_columns(table, ref_logp=ref_logp, progress_adv=per_step, step_advantage=[-a for a in per_step])


def test_to_table_has_the_rollout_schema():
    table = to_table([make_trajectory(i, 2) for i in range(3)])
    assert table.schema.equals(ROLLOUT_SCHEMA, check_metadata=True)
    assert to_table([]).schema.equals(ROLLOUT_SCHEMA) and to_table([]).num_rows == 0


def test_arrow_round_trip_keeps_every_column(tmp_path):
    table = scored_table()
    assert table.schema.equals(SCORED_SCHEMA, check_metadata=True)
    path = tmp_path / "batch.parquet"
    write_parquet(table, path)
    assert [p.name for p in tmp_path.iterdir()] == ["batch.parquet"]  # no .tmp left behind
    for back in (from_ipc(to_ipc(table)), read_parquet(path)):
        assert back.schema.equals(SCORED_SCHEMA, check_metadata=True)
        assert back.to_pylist() == table.to_pylist()
    row = table.slice(1, 1).to_pylist()[0]
    assert row["step_index"] == [-1, -1, -1, 0, 0, -1, -1]
    assert row["behavior_logp"] == [0.0, 0.0, 0.0, -0.5, -0.25, 0.0, 0.0]
    assert row["progress_adv"] == [0.0] and row["step_advantage"] == [-0.0]
    assert table.column("success").to_pylist() == [False, True, False, False]  # row 3 is done in 0 steps


def test_ragged_respects_slicing():
    table = concat([scored_table(3), scored_table(4)]).slice(2, 4)  # spans two chunks, offset into the first
    assert table.column("tokens").num_chunks == 2
    expected = table.to_pylist()
    for column in ("tokens", "action_mask", "step_index", "behavior_logp", "progress_adv"):
        rows = ragged(table, column)
        assert [r.tolist() for r in rows] == [e[column] for e in expected]
    assert ragged(table, "action_mask")[0].dtype == np.bool_
    assert ragged(table, "step_index")[0].dtype == np.int16
    assert ragged(table.slice(1, 0), "tokens") == [] and ragged(to_table([]), "tokens") == []


def test_with_columns_replaces_and_checks_lengths():
    table = scored_table()
    replaced = with_columns(table, ref_logp=[np.zeros(len(r)) for r in ragged(table, "tokens")])
    assert replaced.schema.equals(SCORED_SCHEMA, check_metadata=True)
    assert all((r == 0).all() for r in ragged(replaced, "ref_logp"))
    with pytest.raises(ValueError, match="ref_logp row 0 has 2 values, tokens has 3"):
        with_columns(table, ref_logp=[np.zeros(2)] * table.num_rows)
    with pytest.raises(ValueError, match="cannot replace"):
        with_columns(table, tokens=[np.zeros(len(r)) for r in ragged(table, "tokens")])


def test_to_table_rejects_mismatched_lengths():
    trajectory = make_trajectory(0, 2)
    trajectory.behavior_logp.pop()
    with pytest.raises(ValueError, match="trajectory-0"):
        to_table([trajectory])


def test_read_parquet_names_file_and_bad_column(tmp_path):
    table = scored_table()
    missing = tmp_path / "missing.parquet"
    write_parquet(table.drop_columns(["step_advantage"]), missing)
    with pytest.raises(ValueError, match=r"missing\.parquet: column step_advantage is missing"):
        read_parquet(missing)
    mistyped = tmp_path / "mistyped.parquet"
    write_parquet(table.set_column(3, "policy_version", table.column("policy_version").cast(pa.int64())), mistyped)
    with pytest.raises(ValueError, match=r"mistyped\.parquet: column policy_version is int64, expected int32"):
        read_parquet(mistyped)
    rollout = tmp_path / "rollout.parquet"
    write_parquet(to_table([make_trajectory(1, 1)]), rollout)
    assert read_parquet(rollout, schema=ROLLOUT_SCHEMA).num_rows == 1
