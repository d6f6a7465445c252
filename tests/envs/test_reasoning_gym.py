"""The reasoning-gym adapter: splits, the library's own answers and scores, answer extraction, retries, options."""

import json
import os
import subprocess
import sys

import pytest

reasoning_gym = pytest.importorskip("reasoning_gym")

from envs.reasoning_gym import ANSWER_FORMAT, DATASETS, EVAL_SEED, ReasoningGym, extract_answer  # noqa: E402


def library_entry(dataset: str, seed: int, **options) -> dict:
    """The entry behind a task seed, straight from reasoning-gym (train: dataset seed 0; eval: EVAL_SEED)."""
    dataset_seed = EVAL_SEED if seed >= EVAL_SEED else 0
    return reasoning_gym.create_dataset(dataset, seed=dataset_seed, size=10**5, **options)[seed - dataset_seed]


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_offered_dataset_scores_its_own_answer_one_and_a_wrong_answer_below_one(dataset):
    env = ReasoningGym(dataset, num_tasks=2)
    for task in (env.tasks("train")[1], env.tasks("eval")[0]):
        entry = library_entry(dataset, task.seed)
        assert env.reset(task) == f"{entry['question'].strip()}\n\n{ANSWER_FORMAT}"
        result = env.step(f"Let me think.\n<answer>{entry['answer']}</answer>")
        assert (result.reward, result.done, result.success, result.observation) == (1.0, True, True, "Correct.")
        env.reset(task)
        wrong = env.step("<answer>not the answer</answer>")
        assert wrong.reward < 1.0 and wrong.done and wrong.success is False
        assert wrong.observation.endswith(f"A correct answer: {entry['answer']}")


@pytest.mark.parametrize("dataset", ["chain_sum", "coin_flip", "prime_factorization"])
def test_splits_are_deterministic_and_share_no_task_id_or_question(dataset):
    env = ReasoningGym(dataset, num_tasks=100)
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert train == ReasoningGym(dataset, num_tasks=100).tasks("train") and held_out == env.tasks("eval")
    assert [t.seed for t in train] == list(range(100)) and all(t.seed >= EVAL_SEED for t in held_out)
    assert train[3].task_id == f"reasoning_gym/{dataset}-3"
    assert not {t.task_id for t in train} & {t.task_id for t in held_out}
    train_questions = {env.reset(t) for t in train}
    eval_questions = [env.reset(t) for t in held_out]
    assert len(set(eval_questions)) == len(eval_questions) and not train_questions & set(eval_questions)
    assert held_out  # coin_flip repeats questions often: eval keeps only the new ones, but some remain


def test_eval_skips_exactly_the_entries_whose_question_is_already_in_train_or_eval():
    # coin_flip has few distinct questions ("at least 0 heads in 9 flips"): many eval entries repeat one
    env = ReasoningGym("coin_flip", num_tasks=100)
    kept = {t.seed - EVAL_SEED for t in env.tasks("eval")}
    seen = {library_entry("coin_flip", seed)["question"] for seed in range(100)}
    for index in range(max(kept) + 1):
        question = library_entry("coin_flip", EVAL_SEED + index)["question"]
        assert (index in kept) == (question not in seen), index
        seen.add(question)
    assert len(kept) == 100 and max(kept) > 100  # some were skipped
    assert len(ReasoningGym("coin_flip", num_tasks=512).tasks("eval")) < 512  # fewer: the questions run out


def test_a_task_gives_the_same_question_in_a_process_with_another_hash_seed():
    script = (
        "import json; from envs.reasoning_gym import DATASETS, ReasoningGym\n"
        "envs = {d: ReasoningGym(d, num_tasks=1) for d in DATASETS}\n"
        "print(json.dumps({d: [e.reset(t) for t in e.tasks('train') + e.tasks('eval')] for d, e in envs.items()}))"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    reply = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=120)
    assert reply.returncode == 0, reply.stderr[-2000:]
    there = json.loads(reply.stdout.strip().splitlines()[-1])
    for dataset in DATASETS:
        env = ReasoningGym(dataset, num_tasks=1)
        assert [env.reset(t) for t in env.tasks("train") + env.tasks("eval")] == there[dataset], dataset


@pytest.mark.parametrize(
    ("action", "answer"),
    [
        ("<answer>42</answer>", "42"),
        ("I add them up. <answer> -14282 </answer>", "-14282"),
        ("<answer>1</answer> no, wait: <answer>2</answer>", "2"),  # the last one counts
        ("<answer>3 1\n2 4</answer>", "3 1\n2 4"),  # a grid keeps its lines
        ("so the result is\n<answer>7", "7"),  # stopped at the stop string "</answer>"
        ("The sum is \\boxed{12}.", "12"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("First, 2 + 2 = 4.\nAnswer: 4", "4"),
        ("The final answer is 9.", "9"),
        ("**Answer:** Alice is a knight", "Alice is a knight"),
        ("  `17`  ", "17"),
        ("olleh", "olleh"),  # a bare answer
        ("", None),
        ("<answer>  </answer>", None),
    ],
)
def test_extract_answer_reads_what_small_models_write(action, answer):
    assert extract_answer(action) == answer


def test_untagged_and_boxed_answers_score_like_tagged_ones():
    env = ReasoningGym("chain_sum", num_tasks=1)
    task = env.tasks("train")[0]
    answer = library_entry("chain_sum", task.seed)["answer"]
    for action in (answer, f"\\boxed{{{answer}}}", f"Adding step by step.\nThe answer is {answer}."):
        env.reset(task)
        assert env.step(action).success is True, action


def test_with_max_steps_a_wrong_answer_gets_its_score_and_another_try():
    env = ReasoningGym("chain_sum", max_steps=3, num_tasks=1)
    task = env.tasks("train")[0]
    answer = library_entry("chain_sum", task.seed)["answer"]
    env.reset(task)
    results = [env.step("<answer>0</answer>"), env.step("I am not sure."), env.step(f"<answer>{answer}</answer>")]
    assert results[0].observation == f"Your answer scores 0.00 of 1. Try again. {ANSWER_FORMAT}"
    assert results[1].observation == f"Your answer scores 0.00 of 1. Try again. {ANSWER_FORMAT}"  # read as bare text
    assert [r.done for r in results] == [False, False, True] and [r.success for r in results] == [None, None, True]
    assert [r.reward for r in results] == [0.0, 0.0, 1.0]


def test_outcome_is_the_score_of_the_last_answer_and_max_steps_ends_with_success_false():
    env = ReasoningGym("chain_sum", max_steps=2, num_tasks=1)
    task = env.tasks("train")[0]
    answer = library_entry("chain_sum", task.seed)["answer"]
    env.reset(task)
    partial = env.step(f"<answer>{answer}xx</answer>")  # the library's partial credit: len(answer) / len(text)
    assert 0.0 < partial.reward < 1.0 and not partial.done and partial.info["score"] == partial.reward
    last = env.step("<answer>zzz</answer>")
    assert last.done and last.success is False and partial.reward + last.reward == pytest.approx(last.info["score"])
    assert last.observation.startswith("Your answer scores") and last.observation.endswith(
        f"A correct answer: {answer}"
    )


def test_no_answer_on_the_last_step_says_so_and_scores_zero():
    env = ReasoningGym("gcd", num_tasks=1)
    env.reset(env.tasks("train")[0])
    result = env.step("   ")
    assert (result.reward, result.done, result.success) == (0.0, True, False)
    assert result.observation.startswith("No answer found.") and result.info["answer"] is None


def test_a_scorer_that_raises_on_malformed_text_scores_zero():
    env = ReasoningGym("prime_factorization", num_tasks=1)  # its scorer calls int() on every factor
    env.reset(env.tasks("train")[0])
    assert env.step("<answer>two times three</answer>").reward == 0.0


def test_options_are_the_dataset_config_and_bad_ones_name_the_fields():
    small = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    env = ReasoningGym("chain_sum", num_tasks=1, **small)
    observation = env.reset(env.tasks("train")[0])
    assert observation == f"{library_entry('chain_sum', 0, **small)['question'].strip()}\n\n{ANSWER_FORMAT}"
    assert len(observation.split("\n")[0].split(":")[1].split()) == 4  # "a op b =": two one-digit terms
    with pytest.raises(ValueError, match="unknown option.*max_term.*options: min_terms, max_terms"):
        ReasoningGym("chain_sum", max_term=2)
    with pytest.raises(ValueError, match="bad options"):
        ReasoningGym("chain_sum", min_terms=5, max_terms=2)
    with pytest.raises(ValueError, match="unknown dataset 'arc_agi'.*chain_sum"):
        ReasoningGym("arc_agi")
