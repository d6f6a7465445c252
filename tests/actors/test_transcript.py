"""actors/transcript.py: the paper renderer byte for byte, BOS and truncation, the chat renderer, the readers."""

import json

import numpy as np
import pytest

from actors.trajectory import Trajectory, to_table, write_parquet
from actors.transcript import (
    InputError,
    Tokenized,
    Transcript,
    chat_tokens,
    history_texts,
    paper_texts,
    read_transcripts,
    render,
    tokenize_texts,
    truncate_left,
)

BOS = 1


class CharTokenizer:
    """One id per character (its code point), optional BOS: spans can be checked by hand."""

    def __init__(self, bos: bool):
        self.bos_token_id = BOS if bos else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens  # the paper tokenizes each message without special tokens
        return [ord(c) for c in text]


def test_paper_render_matches_the_official_strings_byte_for_byte():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": " Sure. ",
            "tool_calls": [{"name": "find", "arguments": {"city": "Paris", "n": 2}}],
        },
        {"role": "tool", "content": None},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        {"role": "assistant", "content": "a", "tool_calls": [{"name": "x", "arguments": {}}, {"name": "y"}]},
    ]
    texts, is_action = paper_texts(messages)
    assert texts == [
        "[system]: be brief",
        "\n[user]: hi",
        "\n[assistant]: Sure. \ntool_call(find, {'city': 'Paris', 'n': 2})",  # only the ends are stripped
        "\n[tool]: ",
        "\n[assistant]: [assistant action]",
        "\n[assistant]: tool_call(, {})",
        "\n[assistant]: a\ntool_call(x, {})\ntool_call(y, {})",
    ]
    assert is_action == [False, False, True, False, True, True, True]


def test_whowhen_render_every_non_empty_message_is_a_step_except_a_first_human_one():
    history = [
        {"role": "human", "content": "find the door"},
        {"role": "Orchestrator (thought)", "content": "go left"},
        {"role": "WebSurfer", "content": "   "},
        {"name": "Coder", "content": "print(1)"},
    ]
    texts, is_action = history_texts(history)
    assert texts == [
        "[human]: find the door",
        "\n[Orchestrator (thought)]: go left",
        "\n[WebSurfer]:    ",
        "\n[Coder]: print(1)",
    ]
    assert is_action == [False, True, False, True]
    assert history_texts([{"role": "Planner", "content": "plan"}])[1] == [True]  # a first non-human message is a step


@pytest.mark.parametrize("bos", [True, False])
def test_tokenize_texts_prepends_bos_only_if_the_tokenizer_defines_one(bos):
    tokens = tokenize_texts(["ab", "\ncd"], [False, True], CharTokenizer(bos))
    offset = 1 if bos else 0
    assert tokens.ids == [BOS] * offset + [ord(c) for c in "ab\ncd"]
    assert tokens.spans == [(offset, offset + 2), (offset + 2, offset + 5)]
    assert not tokens.truncated


def test_left_truncation_shifts_spans_drops_bos_and_empties_cut_spans():
    tokens = Tokenized([BOS, 10, 11, 12, 13, 14, 15, 16], [(1, 3), (3, 6), (6, 8)], [True, True, True])
    cut = truncate_left(tokens, 4)
    assert cut.ids == [13, 14, 15, 16] and BOS not in cut.ids
    assert cut.spans == [(0, 0), (0, 2), (2, 4)]
    assert cut.truncated and cut.is_action == [True, True, True]
    assert truncate_left(tokens, 8) is tokens and not tokens.truncated


def test_render_left_truncates_the_paper_transcript_to_max_length():
    transcript = Transcript(
        "t", "t", None, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "ok"}]
    )
    tokens = render(transcript, CharTokenizer(bos=True), "paper", max_length=10)
    assert tokens.ids == [ord(c) for c in "[user]: hello\n[assistant]: ok"][-10:] and tokens.truncated
    assert tokens.spans == [(0, 0), (0, 10)]


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_chat_render_spans_are_the_assistant_actions_through_eos(tiny_tokenizer):
    tokenizer = tiny_tokenizer
    messages = [
        {"role": "user", "content": "you are in a corridor"},
        {"role": "assistant", "content": "open the red door"},
        {"role": "user", "content": "the door is open"},
        {"role": "assistant", "content": "blue"},
    ]
    tokens = chat_tokens(messages, tokenizer)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(tokens.ids) == full
    assert tokens.is_action == [False, True, False, True]
    actions = [tokenizer.decode(tokens.ids[s:e]) for (s, e), a in zip(tokens.spans, tokens.is_action) if a]
    assert actions == ["open the red door<|im_end|>", "blue<|im_end|>"]


def test_malformed_jsonl_line_raises_naming_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    good = json.dumps({"id": "a", "messages": [{"role": "user", "content": "x"}]})
    path.write_text(good + "\n\n" + '{"id": "b", "messages": [\n')
    with pytest.raises(InputError, match=rf"{path}:3: not valid JSON"):
        read_transcripts(path)
    path.write_text(good + "\n" + json.dumps({"id": "b", "messages": "hi"}) + "\n")
    with pytest.raises(InputError, match=rf"{path}:2: 'messages' must be a list"):
        read_transcripts(path)


def test_json_input_is_detected_as_tau2_or_whowhen(tmp_path):
    tau2 = tmp_path / "tau2.json"
    simulation = {"id": "s0", "task_id": "7", "messages": [{"role": "assistant", "content": "x"}]}
    tau2.write_text(json.dumps({"simulations": [{**simulation, "reward_info": {"reward": 1.0}}]}))
    (transcript,), fmt = read_transcripts(tau2)
    assert fmt == "tau2" and (transcript.trajectory_id, transcript.task_id, transcript.reward) == ("s0", "7", 1.0)
    whowhen = tmp_path / "ww.json"
    whowhen.write_text(json.dumps({"history": [{"role": "human", "content": "q"}], "mistake_step": "0"}))
    (transcript,), fmt = read_transcripts(whowhen)
    assert fmt == "whowhen" and transcript.history and transcript.mistake_step == 0


def test_parquet_steps_become_action_spans_and_a_step_without_tokens_stays_empty(tmp_path):
    trajectory = Trajectory(
        trajectory_id="r0",
        task_id="task",
        group_id="g",
        policy_version=0,
        tokens=[5, 6, 7, 8, 9, 10, 11],
        action_mask=[False, True, True, False, False, True, False],
        step_index=[-1, 0, 0, -1, -1, 2, -1],  # step 1 has no action tokens; step 3 is cut off
        behavior_logp=[0.0] * 7,
        step_rewards=[0.0] * 4,
        outcome=1.0,
        num_steps=4,
        finish_reason="done",
    )
    path = tmp_path / "iteration.parquet"
    write_parquet(to_table([trajectory]), path)
    (transcript,), fmt = read_transcripts(path)
    assert fmt == "parquet" and transcript.reward == 1.0
    tokens = transcript.tokens
    assert tokens.ids == [5, 6, 7, 8, 9, 10, 11]
    # the empty step 1 sits where its action would begin: after the observation that follows step 0
    assert tokens.spans == [(0, 1), (1, 3), (3, 5), (5, 5), (5, 6), (6, 7), (7, 7)]
    assert tokens.is_action == [False, True, False, True, True, False, True]
    assert sum(tokens.is_action) == 4 and np.all(np.diff([s for s, _ in tokens.spans]) >= 0)


def test_transcript_module_imports_no_torch_or_transformers():
    import ast
    from pathlib import Path

    import actors.transcript

    tree = ast.parse(Path(actors.transcript.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {name.split(".")[0] for name in names} & {"torch", "transformers", "ray", "vllm", "deepspeed"}
