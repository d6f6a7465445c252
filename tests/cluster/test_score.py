"""`freelunch score` end to end on the tiny model, through cluster.cli.main as users run it."""

import json
import shutil

import numpy as np
import pytest
import torch

from actors.transcript import read_transcripts, render
from cluster.cli import main

TRAJECTORIES = [
    ("a0", "a", 1.0, ["open the red door", "answer with red"]),
    ("a1", "a", 0.0, ["blue", ""]),
    ("b0", "b", 0.0, ["the green door is open you are in a corridor of rooms"]),
    ("b1", "b", 1.0, ["white"]),
]


def write_chat(path, rows=TRAJECTORIES):
    lines = []
    for trajectory_id, task_id, reward, actions in rows:
        messages = [{"role": "system", "content": "answer with the door"}]
        for t, action in enumerate(actions):
            messages.append({"role": "user", "content": f"you are in room {t}"})
            calls = [{"name": "open", "arguments": {"door": t}}] if t == 1 else None
            messages.append({"role": "assistant", "content": action, "tool_calls": calls})
        lines.append(json.dumps({"id": trajectory_id, "task_id": task_id, "reward": reward, "messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def perturbed_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with noise on every weight, and the same tokenizer: a policy that differs from the ref."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("perturbed")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def test_policy_equal_to_ref_gives_exactly_zero_steps_and_score(tiny_model_dir, tmp_path):
    ref_dir = shutil.copytree(tiny_model_dir, tmp_path / "ref")  # a second directory: two models are loaded
    output = tmp_path / "out.jsonl"
    argv = [
        "score",
        "--policy",
        tiny_model_dir,
        "--ref",
        str(ref_dir),
        "--input",
        str(write_chat(tmp_path / "in.jsonl")),
    ]
    assert main([*argv, "--output", str(output), "--token-agg", "min", "--step-agg", "bottom10"]) == 0
    records = read_jsonl(output)
    assert [r["id"] for r in records] == ["a0", "a1", "b0", "b1"]
    for record, (_, _, _, actions) in zip(records, TRAJECTORIES):
        # system, then (user, assistant) per step: null off actions, exactly 0.0 on them
        assert record["step_scores"] == [None] + [None, 0.0] * len(actions)
        assert record["score"] == 0.0 and record["policy_logp_score"] == record["ref_logp_score"] < 0
        assert record["truncated"] is False and record["num_tokens"] > 0


def naive_span_logp(model_dir, tokens):
    """Independent path: one unpadded forward per trajectory, full-vocabulary log_softmax, official slicing."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([tokens.ids])).logits[0].float()
    gathered = logits[:-1].log_softmax(-1).gather(1, torch.tensor(tokens.ids[1:])[:, None])[:, 0].numpy()
    # gathered[j] is the logp of token j + 1; a span cut to (0, 0) must stay empty, not wrap to [0:-1]
    return [gathered[max(s, 1) - 1 : max(e - 1, 0)] if a else None for (s, e), a in zip(tokens.spans, tokens.is_action)]


def test_step_scores_equal_naive_min_of_policy_minus_min_of_ref(tiny_model_dir, perturbed_model_dir, tmp_path):
    from transformers import AutoTokenizer

    source, output = write_chat(tmp_path / "in.jsonl"), tmp_path / "out.parquet"
    argv = ["score", "--policy", perturbed_model_dir, "--ref", tiny_model_dir, "--input", str(source)]
    argv += ["--output", str(output), "--token-agg", "min", "--beta", "2.0", "--max-length", "40"]
    assert main(argv) == 0
    import pyarrow.parquet as pq

    records = pq.read_table(output).to_pylist()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    transcripts, _ = read_transcripts(source)
    assert sum(r["truncated"] for r in records) >= 1  # b0 is longer than 40 tokens
    for record, transcript in zip(records, transcripts):
        tokens = render(transcript, tokenizer, "paper", 40)
        policy, ref = naive_span_logp(perturbed_model_dir, tokens), naive_span_logp(tiny_model_dir, tokens)
        expected = [
            None if p is None else 2.0 * ((p.min() if p.size else 0.0) - (r.min() if r.size else 0.0))
            for p, r in zip(policy, ref)
        ]
        assert record["truncated"] == tokens.truncated and record["num_tokens"] == len(tokens.ids)
        assert [s is None for s in record["step_scores"]] == [e is None for e in expected]
        np.testing.assert_allclose(
            [s for s in record["step_scores"] if s is not None], [e for e in expected if e is not None], atol=1e-5
        )
        assert any(s not in (None, 0.0) for s in record["step_scores"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_truncated"] == sum(r["truncated"] for r in records)


def write_whowhen(path):
    history = [
        {"role": "human", "content": "which door is open"},
        {"role": "Planner", "content": "try the red door"},
        {"role": "Door", "content": ""},
        {"role": "Opener", "content": "open the blue door"},
    ]
    path.write_text(json.dumps([{"id": f"w{i}", "history": history, "mistake_step": 1 + 2 * i} for i in range(2)]))
    return path


@pytest.mark.parametrize(
    "task, keys",
    [
        ("bon", {"num_tasks", "bon_success_rate", "bon_mean_reward", "pass_at_n", "mean_at_n"}),
        ("uq", {"auroc", "spearman", "n"}),
        ("fa", {"min_cumulative", "sharpest_drop", "sharpest_abs_drop"}),
    ],
)
def test_summary_of_each_task_has_the_documented_keys_and_report(
    task, keys, tiny_model_dir, perturbed_model_dir, tmp_path
):
    source = write_whowhen(tmp_path / "ww.json") if task == "fa" else write_chat(tmp_path / "in.jsonl")
    report = tmp_path / "report"
    argv = ["score", "--policy", perturbed_model_dir, "--ref", tiny_model_dir, "--input", str(source)]
    assert main([*argv, "--output", str(tmp_path / "out.jsonl"), "--task", task, "--report", str(report)]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["num_trajectories"] == (2 if task == "fa" else 4) and summary["num_truncated"] == 0
    assert set(summary[task]) >= {"progress_adv", "policy_logp", "ref_logp"}
    for method in ("progress_adv", "policy_logp", "ref_logp"):
        assert set(summary[task][method]) == keys
    if task == "fa":
        assert set(summary["fa"]["progress_adv"]["min_cumulative"]) == {"accuracy", "mae", "n"}
    plot = {"bon": "bon.png", "uq": "roc.png", "fa": "steps.png"}[task]
    assert (report / "report.html").exists() and (report / plot).exists()
    assert plot in (report / "report.html").read_text()


def test_mismatched_tokenizers_error_names_both_dirs(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["<extra_door>"])
    tokenizer.save_pretrained(other)
    output = tmp_path / "out.jsonl"
    argv = ["score", "--policy", tiny_model_dir, "--ref", str(other), "--input", str(write_chat(tmp_path / "in.jsonl"))]
    assert main([*argv, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert tiny_model_dir in err and str(other) in err and "different tokenizers" in err
    assert not output.exists()


def test_malformed_line_errors_with_file_and_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    source = write_chat(tmp_path / "in.jsonl")
    lines = source.read_text().splitlines()
    source.write_text("\n".join([lines[0], '{"id": "x", "messages": [{"content": "no role"}]}', *lines[1:]]) + "\n")
    output = tmp_path / "out" / "scores.parquet"
    argv = ["score", "--policy", tiny_model_dir, "--ref", tiny_model_dir, "--input", str(source)]
    assert main([*argv, "--output", str(output), "--task", "uq"]) == 2
    assert f"{source}:2:" in capsys.readouterr().err
    assert not output.parent.exists()


@pytest.mark.slow
def test_ray_workers_give_the_same_scores_as_one_process(tiny_model_dir, perturbed_model_dir, tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    source = write_chat(tmp_path / "in.jsonl")
    argv = ["score", "--policy", perturbed_model_dir, "--ref", tiny_model_dir, "--input", str(source)]
    assert main([*argv, "--output", str(tmp_path / "one.jsonl")]) == 0
    try:
        assert main([*argv, "--output", str(tmp_path / "ray.jsonl"), "--ray", "2"]) == 0
    finally:
        ray.shutdown()
    one, spread = read_jsonl(tmp_path / "one.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    assert [r["id"] for r in spread] == [r["id"] for r in one]
    for a, b in zip(one, spread):
        np.testing.assert_allclose(b["score"], a["score"], atol=1e-5)
        assert [s is None for s in b["step_scores"]] == [s is None for s in a["step_scores"]]
