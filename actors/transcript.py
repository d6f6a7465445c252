"""Trajectory files -> token ids with one span per message: the input side of `freelunch score`.

Data flow: Parquet / tau2-bench JSON / chat JSONL / Who&When JSON -> [transcript] -> (ids, spans, is_action)
-> logp of policy and reference -> learner/aggregate.py. No torch: the tokenizer is passed in.
`paper` rendering reproduces the official code byte for byte (PAPER.md §3.1-3.2); `chat` rendering goes
through the tokenizer's chat template, the context the actions were generated in (PAPER.md §9.6).
"""

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from actors.trajectory import ROLLOUT_SCHEMA, ragged, read_parquet

FORMATS = ("auto", "parquet", "tau2", "chat", "whowhen")
RENDERS = ("paper", "chat")
PLACEHOLDER = "[assistant action]"  # the official text for an empty assistant message; it is still scored


class InputError(ValueError):
    """Malformed input; the message starts with the file and the line (or record) at fault."""


@dataclass
class Tokenized:
    """One trajectory as the models see it: ids (T,), and per message a [start, end) span into ids."""

    ids: list[int]
    spans: list[tuple[int, int]]
    is_action: list[bool]  # True on the messages that are scored (the agent's actions)
    truncated: bool = False


@dataclass
class Transcript:
    """One trajectory read from a file, before rendering."""

    trajectory_id: str
    task_id: str
    reward: float | None  # the trajectory's outcome, None when the file has none
    messages: list[dict] = field(default_factory=list)  # role (or name), content, tool_calls
    history: bool = False  # a Who&When history: every non-empty message is a step (render_fa_messages)
    mistake_step: int | None = None  # Who&When: index in `messages` of the decisive error
    tokens: Tokenized | None = None  # Parquet: the recorded token ids; nothing to render


# --- readers ---


def read_transcripts(path: str | os.PathLike, fmt: str = "auto") -> tuple[list[Transcript], str]:
    """Read every trajectory of a file; returns them and the format used. Raises InputError naming file:line."""
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if fmt == "auto":
        fmt = {".parquet": "parquet", ".jsonl": "chat", ".json": "json"}.get(os.path.splitext(path)[1].lower(), "")
        if not fmt:
            raise InputError(f"{path}: cannot tell the format from the extension; pass --format")
    if fmt == "parquet":
        return _read_parquet(path), fmt
    if fmt == "chat":
        return _read_chat(path), fmt
    data = _load_json(path)
    if fmt == "json":  # .json holds either tau2-bench simulations or Who&When records
        fmt = "tau2" if isinstance(data, dict) and "simulations" in data else "whowhen"
    return (_read_tau2(path, data) if fmt == "tau2" else _read_whowhen(path, data)), fmt


def _load_json(path: str):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None


def _read_chat(path: str) -> list[Transcript]:
    """One JSON object per line: id, messages (OpenAI format), optional task_id, reward, mistake_step."""
    transcripts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
            if not isinstance(record, dict) or "id" not in record:
                raise InputError(f"{where}: expected a JSON object with 'id' and 'messages'")
            transcripts.append(
                Transcript(
                    trajectory_id=str(record["id"]),
                    task_id=str(record.get("task_id", record["id"])),
                    reward=_number(record.get("reward"), where, "reward"),
                    messages=_messages(record.get("messages"), where, "role"),
                    mistake_step=_step(record.get("mistake_step"), where),
                )
            )
    return transcripts


def _read_tau2(path: str, data) -> list[Transcript]:
    """{"simulations": [{"id", "task_id", "messages", "reward_info": {"reward"}}]} (PAPER.md §6)."""
    simulations = data.get("simulations") if isinstance(data, dict) else None
    if not isinstance(simulations, list):
        raise InputError(f"{path}: expected {{'simulations': [...]}}")
    transcripts = []
    for i, sim in enumerate(simulations):
        where = f"{path}: simulations[{i}]"
        if not isinstance(sim, dict) or "id" not in sim:
            raise InputError(f"{where}: expected an object with 'id' and 'messages'")
        reward_info = sim.get("reward_info") or {}
        if not isinstance(reward_info, dict):
            raise InputError(f"{where}: reward_info must be an object")
        transcripts.append(
            Transcript(
                trajectory_id=str(sim["id"]),
                task_id=str(sim.get("task_id", sim["id"])),  # the official best-of-N groups the same way
                reward=_number(reward_info.get("reward"), where, "reward_info.reward"),
                messages=_messages(sim.get("messages"), where, "role"),
            )
        )
    return transcripts


def _read_whowhen(path: str, data) -> list[Transcript]:
    """A Who&When record ({history, mistake_step, optional id}) or a list of them."""
    records = data if isinstance(data, list) else [data]
    transcripts = []
    for i, record in enumerate(records):
        where = f"{path}: record[{i}]"
        if not isinstance(record, dict) or "history" not in record:
            raise InputError(f"{where}: expected an object with 'history' and 'mistake_step'")
        trajectory_id = str(record.get("id", record.get("question_ID", f"{os.path.basename(path)}:{i}")))
        transcripts.append(
            Transcript(
                trajectory_id=trajectory_id,
                task_id=str(record.get("task_id", trajectory_id)),
                reward=_number(record.get("reward"), where, "reward"),
                messages=_messages(record["history"], where, "role or name"),
                history=True,
                mistake_step=_step(record.get("mistake_step"), where),
            )
        )
    return transcripts


def _read_parquet(path: str) -> list[Transcript]:
    """Trajectories of `freelunch train`: actions are the runs of step_index >= 0; reward is the outcome."""
    names = ("trajectory_id", "task_id", "tokens", "step_index", "outcome", "num_steps")
    try:
        table = read_parquet(path, schema=pa.schema([ROLLOUT_SCHEMA.field(n) for n in names]))
    except (ValueError, OSError, pa.ArrowException) as error:
        raise InputError(f"{path}: {error}") from None
    columns = {n: table.column(n).to_pylist() for n in ("trajectory_id", "task_id", "outcome", "num_steps")}
    transcripts = []
    for row, (tokens, step_index) in enumerate(zip(ragged(table, "tokens"), ragged(table, "step_index"))):
        spans, is_action = _step_spans(step_index, columns["num_steps"][row], f"{path}: row {row}")
        transcripts.append(
            Transcript(
                trajectory_id=columns["trajectory_id"][row],
                task_id=columns["task_id"][row],
                reward=columns["outcome"][row],
                tokens=Tokenized([int(t) for t in tokens], spans, is_action),
            )
        )
    return transcripts


def _step_spans(step_index: np.ndarray, num_steps: int, where: str) -> tuple[list[tuple[int, int]], list[bool]]:
    """Runs of equal step_index as messages: each step's tokens are one action, each -1 run is context.

    A step with no action tokens gets an empty action span in its place, so the step count stays num_steps.
    """
    step_index = np.asarray(step_index)  # (T,)
    bounds = np.flatnonzero(np.diff(step_index)) + 1
    spans, is_action, next_step = [], [], 0
    for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(step_index)]):
        if end <= start:
            continue
        step = int(step_index[start])
        if step >= 0:
            if step < next_step:
                raise InputError(f"{where}: the tokens of step {step} are not one contiguous run")
            spans += [(int(start), int(start))] * (step - next_step)
            is_action += [True] * (step - next_step)
            next_step = step + 1
        spans.append((int(start), int(end)))
        is_action.append(step >= 0)
    spans += [(len(step_index), len(step_index))] * max(0, num_steps - next_step)
    is_action += [True] * max(0, num_steps - next_step)
    return spans, is_action


def _messages(messages, where: str, role_key: str) -> list[dict]:
    if not isinstance(messages, list):
        raise InputError(f"{where}: 'messages' must be a list of objects")
    for j, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role", message.get("name")), str):
            raise InputError(f"{where}: message {j} must be an object with a string {role_key}")
        if message.get("tool_calls") is not None and not isinstance(message["tool_calls"], list):
            raise InputError(f"{where}: message {j}: tool_calls must be a list")
    return messages


def _number(value, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)


def _step(value, where: str) -> int | None:
    if value is None:
        return None
    try:  # Who&When stores it as a string ("3")
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: mistake_step must be an integer, got {value!r}") from None


# --- renderers ---


def render(transcript: Transcript, tokenizer, mode: str, max_length: int) -> Tokenized:
    """Token ids, spans and is_action of one trajectory, left-truncated to max_length.

    Parquet trajectories keep their recorded ids (already in the generation context) whatever the mode.
    """
    if mode not in RENDERS:
        raise ValueError(f"unknown render {mode!r}; choose one of {', '.join(RENDERS)}")
    if transcript.tokens is not None:
        tokens = transcript.tokens
    elif mode == "paper":
        render_texts = history_texts if transcript.history else paper_texts
        tokens = tokenize_texts(*render_texts(transcript.messages), tokenizer)
    elif transcript.history:
        raise InputError(
            f"{transcript.trajectory_id}: Who&When histories have agent names, not chat roles: use --render paper"
        )
    else:
        tokens = chat_tokens(transcript.messages, tokenizer)
    return truncate_left(tokens, max_length)


def paper_texts(messages: list[dict]) -> tuple[list[str], list[bool]]:
    """One text per message, as the official render_tau2_messages writes it (PAPER.md §3.1).

    "\\n" before every message but the first; "[role]: content"; an assistant message adds its tool calls
    as "tool_call(name, arguments)" lines and is stripped. Tool calls are read flat ({"name", "arguments"}),
    so an OpenAI {"function": {...}} call renders as "tool_call(, {})", as in the official code.
    """
    texts, is_action = [], []
    for i, message in enumerate(messages):
        role = message.get("role", "")
        content = str(message.get("content", "") or "")
        separator = "\n" if i > 0 else ""
        if role != "assistant":
            texts.append(f"{separator}[{role}]: {content}")
            is_action.append(False)
            continue
        # f-string, not repr(): a dict prints as its Python repr (single quotes), a string as itself.
        calls = [
            f"tool_call({c.get('name', '')}, {c.get('arguments', {})})" for c in message.get("tool_calls") or [] if c
        ]
        tool_text = "\n" + "\n".join(calls) if calls else ""
        texts.append(f"{separator}[assistant]: {(content + tool_text).strip() or PLACEHOLDER}")
        is_action.append(True)
    return texts, is_action


def history_texts(history: list[dict]) -> tuple[list[str], list[bool]]:
    """One text per Who&When message, as the official render_fa_messages writes it (PAPER.md §3.1).

    Every message with non-empty content is a step, except a first message whose role is "human" (the task
    itself; the official code applies this on the Hand-Crafted split, where only that message has the role).
    The official code reads only `role`; `name` is used where a message has no role.
    """
    texts, is_action = [], []
    for i, message in enumerate(history):
        role = message.get("role", message.get("name", ""))
        content = str(message.get("content", "") or "")
        separator = "\n" if i > 0 else ""
        texts.append(f"{separator}[{role}]: {content}")
        is_action.append(not (i == 0 and role.lower() == "human") and bool(content.strip()))
    return texts, is_action


def tokenize_texts(texts: list[str], is_action: list[bool], tokenizer) -> Tokenized:
    """Tokenize each message on its own, without special tokens, after BOS if the tokenizer defines one."""
    bos = tokenizer.bos_token_id
    ids: list[int] = [] if bos is None else [bos]
    spans = []
    for text in texts:
        piece = tokenizer.encode(text, add_special_tokens=False)
        spans.append((len(ids), len(ids) + len(piece)))
        ids.extend(piece)
    return Tokenized(ids, spans, list(is_action))


def chat_tokens(messages: list[dict], tokenizer) -> Tokenized:
    """The chat template's rendering, one message at a time; an assistant message's span is its action.

    Each message's text is the template's delta over the messages before it (the template must be
    prefix-stable). For an assistant message the generation prompt is context, and the action runs to the
    end-of-turn (eos) token; the template's text after it is context. BOS is whatever the template writes.
    """
    chat = [{**m, "content": str(m.get("content", "") or "")} for m in messages]
    eos = tokenizer.eos_token or ""
    ids: list[int] = []
    spans, is_action, text = [], [], ""

    def add(piece: str) -> tuple[int, int]:
        start = len(ids)
        ids.extend(tokenizer.encode(piece, add_special_tokens=False))
        return start, len(ids)

    for i, message in enumerate(chat):
        action = message["role"] == "assistant"
        if action:
            prompt = _template(tokenizer, chat[:i], True)
            add(_delta(text, prompt, i))
            text = prompt
        full = _template(tokenizer, chat[: i + 1], False)
        piece = _delta(text, full, i)
        cut = piece.rfind(eos) + len(eos) if action and eos and eos in piece else len(piece)
        spans.append(add(piece[:cut]))
        add(piece[cut:])
        is_action.append(action)
        text = full
    return Tokenized(ids, spans, is_action)


def _template(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    if not tokenizer.chat_template:
        raise InputError("the policy's tokenizer has no chat template: use --render paper")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def _delta(before: str, after: str, index: int) -> str:
    if not after.startswith(before):
        raise InputError(
            f"the chat template is not prefix-stable at message {index}: adding it rewrites the text already "
            "rendered, so messages cannot be scored one span each; use --render paper"
        )
    return after[len(before) :]


def truncate_left(tokens: Tokenized, max_length: int) -> Tokenized:
    """Keep the last max_length ids (PAPER.md §3.2): spans shift left, BOS goes, cut spans become empty."""
    excess = len(tokens.ids) - max_length
    if excess <= 0:
        return tokens
    spans = [(max(0, start - excess), max(0, end - excess)) for start, end in tokens.spans]
    return Tokenized(tokens.ids[excess:], spans, list(tokens.is_action), truncated=True)
