"""[env] reasoning-gym (`reasoning_gym/<dataset>`): procedural reasoning tasks with their own verifiers.

    reasoning_gym.create_dataset(name, seed, size)[index] -> {"question", "answer", "metadata"}
    reset: the question and how to answer -> step: extract the answer -> dataset.score_answer(answer, entry)

Pure Python and offline: every entry is generated on demand from `Random(dataset seed + index)`, and scored by
the dataset's own `score_answer` (exact match, or partial credit where the dataset gives it). Reward = that
score in [0, 1]; success = score 1.

Splits: train is the dataset seeded 0, eval the dataset seeded EVAL_SEED, so the two never share a generator
draw; `Task.seed` is the entry's index in train, EVAL_SEED + its index in eval. Some datasets repeat questions
(coin_flip, prime_factorization), so eval drops every entry whose question text is among the train split's or
earlier in eval: the splits share no question (eval has fewer than num_tasks tasks when the questions run out).
That costs one generation per entry of both splits, once per process (sub-millisecond for most datasets, ~40 ms
an entry for countdown).

Answers: the observation asks for `<answer>...</answer>` (reasoning-gym's own convention) and `extract_answer`
is lenient with what a small model writes instead (see there). Steps: with max_steps = 1 (the default) one
answer ends the trajectory. With max_steps > 1 an answer that is not fully correct gets an observation with its
score and another try; the trajectory ends on a fully correct answer or at max_steps, and its outcome (the sum of
rewards) is the score of the last answer. `import reasoning_gym` takes 2-4 s (it imports matplotlib), once per
process.
"""

import dataclasses
import functools
import math
import re

from envs.adapter import Progress, require
from envs.base import StepResult, Task

# Offered: the datasets that generate offline, deterministically across processes (isomorphic_strings,
# ransom_note, word_ladder and list_functions depend on PYTHONHASHSEED), in under ~1 ms an entry (countdown:
# ~40 ms), with short questions (< 800 characters) and answers, and whose entry["answer"] their own scorer
# accepts (boxnet, graph_color, rush_hour, rubiks_cube, propositional_logic verify free-form solutions instead;
# game_of_life_halting's scorer accepts any text; spell_backward's sums 1/n per letter in floats and so gives
# 1.0000000000000002 to the right word followed by junk). Not offered: the ARC and code sets (long prompts).
DATASETS = (
    # arithmetic
    "basic_arithmetic",
    "chain_sum",
    "products",
    "decimal_arithmetic",
    "decimal_chain_sum",
    "complex_arithmetic",
    "bitwise_arithmetic",
    "fraction_simplification",
    "gcd",
    "lcm",
    "prime_factorization",
    "count_primes",
    "count_bits",
    "power_function",
    "base_conversion",
    "number_format",
    "simple_equations",
    "leg_counting",
    "time_intervals",
    "calendar_arithmetic",
    "gsm_symbolic",
    "simple_geometry",
    "dice",
    "coin_flip",
    # string and list manipulation
    "letter_counting",
    "word_sorting",
    "word_sequence_reversal",
    "number_sorting",
    "number_filtering",
    "letter_jumble",
    "caesar_cipher",
    "sentence_reordering",
    "binary_alternation",
    "cryptarithm",
    # logic and graphs
    "syllogism",
    "aiw",
    "knights_knaves",
    "self_reference",
    "family_relationships",
    "course_schedule",
    "largest_island",
    "shortest_path",
    # puzzles and games
    "maze",
    "mini_sudoku",
    "n_queens",
    "countdown",
    "tsumego",
    "color_cube_rotation",
)
EVAL_SEED = 1_000_000  # the eval dataset's seed; train's is 0
DATASET_SIZE = 100_000  # the datasets' virtual size, fixed so an entry never depends on num_tasks
EVAL_SCAN = 4  # eval looks at up to EVAL_SCAN * num_tasks entries for num_tasks questions not in train
ANSWER_FORMAT = "Give your final answer between <answer> and </answer>, e.g. <answer>your answer</answer>."


class ReasoningGym:
    def __init__(self, dataset: str, seed: int = 0, max_steps: int = 1, num_tasks: int = 512, **options):
        """options: the dataset's config fields as plain values (e.g. chain_sum's max_terms=3); the dataset's
        own defaults otherwise. seed is unused: a task's entry is fixed by its task seed, and scoring has no luck."""
        require("reasoning_gym", "reasoning_gym")
        if dataset not in DATASETS:
            raise ValueError(f"reasoning_gym: unknown dataset {dataset!r}; datasets: {', '.join(DATASETS)}")
        if not 1 <= num_tasks <= DATASET_SIZE // EVAL_SCAN:
            raise ValueError(f"reasoning_gym: num_tasks must be in 1..{DATASET_SIZE // EVAL_SCAN}, got {num_tasks}")
        self.dataset, self.max_steps, self.num_tasks = dataset, max_steps, num_tasks
        self.options = tuple(sorted(options.items()))
        self._progress = Progress(max_steps)
        _dataset(dataset, 0, self.options)  # a bad option fails here, not at the first reset
        self._data, self._entry = None, {}

    def tasks(self, split: str) -> list[Task]:
        if split == "train":
            seeds = range(self.num_tasks)
        elif split == "eval":
            seeds = [EVAL_SEED + index for index in _eval_indices(self.dataset, self.options, self.num_tasks)]
        else:
            raise ValueError(f"reasoning_gym: split must be 'train' or 'eval', got {split!r}")
        return [Task(task_id=f"reasoning_gym/{self.dataset}-{seed}", seed=seed) for seed in seeds]

    def reset(self, task: Task) -> str:
        dataset_seed = EVAL_SEED if task.seed >= EVAL_SEED else 0
        self._data = _dataset(self.dataset, dataset_seed, self.options)
        self._entry = self._data[task.seed - dataset_seed]
        self._progress = Progress(self.max_steps)
        return f"{self._entry['question'].strip()}\n\n{ANSWER_FORMAT}"

    def step(self, action: str) -> StepResult:
        answer = extract_answer(action)
        score = self._score(answer)
        reward, out_of_steps = self._progress.advance(score)
        success = score >= 1.0
        done = success or out_of_steps
        if success:
            text = "Correct."
        else:
            text = "No answer found." if answer is None else f"Your answer scores {score:.2f} of 1."
            text = f"{text} A correct answer: {self._entry['answer']}" if done else f"{text} Try again. {ANSWER_FORMAT}"
        return StepResult(text, reward, done, {"answer": answer, "score": score}, success=success if done else None)

    def _score(self, answer: str | None) -> float:
        """The dataset's score of `answer`, in [0, 1]; 0 when there is none or the scorer cannot read it (some
        scorers raise on malformed text, e.g. prime_factorization's int())."""
        if answer is None:
            return 0.0
        try:
            score = float(self._data.score_answer(answer, self._entry))
        except Exception:  # any failure to read the answer is a wrong answer
            return 0.0
        return min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0


@functools.cache
def _dataset(name: str, seed: int, options: tuple):
    """The dataset `name` seeded `seed` with config `options`, once per process (some take ~0.2 s to build)."""
    reasoning_gym = require("reasoning_gym", "reasoning_gym")
    config_cls = reasoning_gym.factory.DATASETS[name][1]
    fields = [field.name for field in dataclasses.fields(config_cls) if field.name not in ("seed", "size")]
    unknown = [key for key, _ in options if key not in fields]
    if unknown:
        raise ValueError(f"reasoning_gym/{name}: unknown option(s) {', '.join(unknown)}; options: {', '.join(fields)}")
    try:
        return reasoning_gym.create_dataset(name, seed=seed, size=DATASET_SIZE, **dict(options))
    except (AssertionError, TypeError, ValueError) as error:  # the config's validate() asserts
        why = str(error) or f"the config's validate() failed ({type(error).__name__})"
        raise ValueError(f"reasoning_gym/{name}: bad options {dict(options)}: {why}") from None


@functools.cache
def _eval_indices(name: str, options: tuple, num_tasks: int) -> tuple[int, ...]:
    """Indices of the first num_tasks eval entries whose question is neither a train question nor an earlier
    eval one (fewer when the dataset has fewer distinct questions within EVAL_SCAN * num_tasks entries)."""
    train, held_out = _dataset(name, 0, options), _dataset(name, EVAL_SEED, options)
    seen = {train[index]["question"] for index in range(num_tasks)}
    indices = []
    for index in range(EVAL_SCAN * num_tasks):
        question = held_out[index]["question"]
        if question not in seen:
            seen.add(question)
            indices.append(index)
            if len(indices) == num_tasks:
                break
    return tuple(indices)


def extract_answer(action: str) -> str | None:
    """The answer in the policy's action text; None when there is none.

    In order: the last `<answer>...</answer>` (reasoning-gym's `extract_answer`); the text after a last
    `<answer>` never closed (a generation stopped at "</answer>"); the last `\\boxed{...}`; a last line "Answer:
    X" / "The final answer is X." (the trailing period dropped); else the whole action. Surrounding whitespace,
    backticks and bold markers are stripped; an empty result is None.
    """
    tagged = re.findall(r"<answer>(.*?)</answer>", action, flags=re.DOTALL)
    if tagged:
        return _clean(tagged[-1])
    if "<answer>" in action:
        return _clean(action.rpartition("<answer>")[2])
    boxed = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", action)
    if boxed:
        return _clean(boxed[-1])
    last_line = action.strip().rpartition("\n")[2].strip()
    said = re.match(r"\**(?:the\s+)?(?:final\s+)?answer\**(?:\s+is\s*:?|\s*[:=])\**\s*(.+)", last_line, re.I)
    if said:
        return _clean(said.group(1).removesuffix("."))
    return _clean(action)


def _clean(text: str) -> str | None:
    text = text.strip().strip("`").strip()
    text = text.removeprefix("**").removesuffix("**").strip()
    return text or None
