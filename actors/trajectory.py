"""[trajectory] The recorded trajectory and its Arrow schema: agent loop -> [trajectory] -> buffer -> scorer -> learner.

One Arrow row per trajectory. Tables cross process boundaries as Arrow IPC bytes and rest on disk as Parquet;
nothing here pickles. Imports pyarrow and numpy only, so learner/ may import this file.
"""

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMAT = "freelunch-trajectory-v1"


@dataclass
class Trajectory:
    """One attempt of the agent on one task. Per-token lists have len(tokens) entries; per-step lists num_steps."""

    trajectory_id: str
    task_id: str
    group_id: str
    policy_version: int  # stamped by the rollout actor; the agent loop leaves 0
    tokens: list[int]  # prompt, actions and observations, in order
    action_mask: list[bool]  # True only on tokens sampled by the policy
    step_index: list[int]  # the step number on action tokens, -1 elsewhere
    behavior_logp: list[float]  # sampling logp on action tokens, 0.0 elsewhere
    step_rewards: list[float]  # one per step
    outcome: float
    num_steps: int
    finish_reason: str  # "done" | "max_steps" | "max_tokens" | "error" | "timeout" (an env call ran out of time)
    error: str = ""  # the env failure's "Type: message" when finish_reason is "error" or "timeout"
    success: bool = False  # the env's success on a "done" ending; False for every other ending


ROLLOUT_SCHEMA = pa.schema(
    [
        pa.field("trajectory_id", pa.string()),
        pa.field("task_id", pa.string()),
        pa.field("group_id", pa.string()),
        pa.field("policy_version", pa.int32()),
        pa.field("tokens", pa.list_(pa.int32())),
        pa.field("action_mask", pa.list_(pa.bool_())),
        pa.field("step_index", pa.list_(pa.int16())),
        pa.field("behavior_logp", pa.list_(pa.float32())),
        pa.field("step_rewards", pa.list_(pa.float32())),
        pa.field("outcome", pa.float32()),
        pa.field("success", pa.bool_()),
        pa.field("num_steps", pa.int16()),
        pa.field("finish_reason", pa.string()),
        pa.field("error", pa.string()),
    ],
    metadata={"format": FORMAT},
)

SCORED_SCHEMA = pa.schema(
    list(ROLLOUT_SCHEMA)
    + [
        pa.field("ref_logp", pa.list_(pa.float32())),  # per token
        pa.field("progress_adv", pa.list_(pa.float32())),  # per step
        pa.field("step_advantage", pa.list_(pa.float32())),  # per step
    ],
    metadata={"format": FORMAT},
)

# Which existing column each added list column must match row by row: catches a scorer that shifts or
# drops one entry (e.g. a logp off-by-one) where it happens, not as a wrong gather in the learner.
_ALIGNED_WITH = {"ref_logp": "tokens", "progress_adv": "step_rewards", "step_advantage": "step_rewards"}


def to_table(trajectories: list[Trajectory]) -> pa.Table:
    """Trajectories -> one table of ROLLOUT_SCHEMA; raises ValueError on a trajectory with mismatched lengths."""
    for t in trajectories:
        _check_lengths(t)
    columns = {}
    for field in ROLLOUT_SCHEMA:
        values = [getattr(t, field.name) for t in trajectories]
        # pa.array range-checks every value against the narrow types (int16 step_index, int32 tokens).
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=ROLLOUT_SCHEMA)


def _check_lengths(t: Trajectory) -> None:
    per_token = {len(t.tokens), len(t.action_mask), len(t.step_index), len(t.behavior_logp)}
    if len(per_token) != 1:
        raise ValueError(
            f"trajectory {t.trajectory_id}: tokens, action_mask, step_index and behavior_logp have lengths "
            f"{len(t.tokens)}, {len(t.action_mask)}, {len(t.step_index)}, {len(t.behavior_logp)}; they must be equal"
        )
    if len(t.step_rewards) != t.num_steps:
        raise ValueError(
            f"trajectory {t.trajectory_id}: {len(t.step_rewards)} step_rewards for num_steps={t.num_steps}"
        )


def to_ipc(table: pa.Table) -> bytes:
    """The table as an Arrow IPC stream, the form in which it crosses a process boundary."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def concat(tables: list[pa.Table]) -> pa.Table:
    """Rows of all tables, in order; the schemas must be equal (an empty list has no schema: ValueError)."""
    if not tables:
        raise ValueError("concat needs at least one table")
    return pa.concat_tables(tables)


def ragged(table: pa.Table, column: str) -> list[np.ndarray]:
    """Per-row numpy arrays of a list column. Arrays may be read-only views into the table's memory."""
    rows: list[np.ndarray] = []
    for chunk in table.column(column).chunks:
        if len(chunk) == 0:  # np.split below would turn no rows into one empty row
            continue
        # `chunk.values` ignores slicing, but `chunk.offsets` are the slice's own offsets into it.
        offsets = chunk.offsets.to_numpy()
        flat = chunk.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy(zero_copy_only=False)
        rows.extend(np.split(flat, offsets[1:-1] - offsets[0]))
    return rows


def with_columns(table: pa.Table, **columns: list[np.ndarray]) -> pa.Table:
    """Append (or replace) list<float32> columns given one numpy array per row.

    Example: `with_columns(table, ref_logp=[...], progress_adv=[...])`. ref_logp rows must match tokens in
    length, progress_adv and step_advantage rows must match step_rewards; other names are not checked.
    """
    for name, rows in columns.items():
        if len(rows) != table.num_rows:
            raise ValueError(f"with_columns: {name} has {len(rows)} rows, the table has {table.num_rows}")
        if name in _ALIGNED_WITH:
            _check_aligned(table, name, rows, _ALIGNED_WITH[name])
        field = pa.field(name, pa.list_(pa.float32()))
        array = _list_array(rows)
        index = table.schema.get_field_index(name)
        if index == -1:
            table = table.append_column(field, array)
        elif table.schema.field(index).type != field.type:
            raise ValueError(f"with_columns: {name} is {table.schema.field(index).type}, cannot replace it")
        else:
            table = table.set_column(index, field, array)
    return table


def _check_aligned(table: pa.Table, name: str, rows: list[np.ndarray], reference: str) -> None:
    expected = pc.list_value_length(table.column(reference)).to_numpy(zero_copy_only=False)
    for row, (array, length) in enumerate(zip(rows, expected)):
        if len(array) != length:
            raise ValueError(f"with_columns: {name} row {row} has {len(array)} values, {reference} has {length}")


def _list_array(rows: list[np.ndarray]) -> pa.ListArray:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(rows).astype(np.float32) if rows else np.zeros(0, dtype=np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    """Write atomically: a reader sees the old file or the whole new one, never a partial write."""
    path = os.fspath(path)
    tmp = path + ".tmp"  # same directory, so os.replace is a rename within one filesystem
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_parquet(path: str | os.PathLike, schema: pa.Schema = SCORED_SCHEMA) -> pa.Table:
    """Read a table; raises ValueError naming the file and column if a field of `schema` is missing or mistyped."""
    table = pq.read_table(path)
    for field in schema:
        index = table.schema.get_field_index(field.name)
        if index == -1:
            raise ValueError(f"{os.fspath(path)}: column {field.name} is missing (expected {field.type})")
        found = table.schema.field(index).type
        if found != field.type:
            raise ValueError(f"{os.fspath(path)}: column {field.name} is {found}, expected {field.type}")
    # Parquet renames list children "item" -> "element"; cast back so the schema equals the one written.
    fields = [schema.field(f.name) if f.name in schema.names else f for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
