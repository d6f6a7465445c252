"""`freelunch report`: one self-contained HTML page of a training run, or of several runs overlaid.

    freelunch report RUN_DIR [RUN_DIR ...] [--out DIR] [--trajectories N] [--seed S]

Reads what `freelunch train` writes into a run directory (cluster/train.py): metrics.jsonl (one line per
iteration, and one per evaluation: the lines with eval/success_rate), config.toml and
trajectories/iteration_NNNNN.parquet. Writes DIR/index.html and one PNG per figure: learning curves (train and
eval), the update, phase times, throughput, the progress advantage by step, the predicted failure steps of failed
trajectories, staleness, then a sample of the last iteration's trajectories as conversations, each step with its
progress advantage. Several runs share every panel, one colour per run, and get a table of the config keys that
differ. The page refers only to its own PNGs, by relative path: no scripts, stylesheets, fonts or network.

A key a run lacks (an older run, a run without evaluations) leaves its panel out. matplotlib is the `report`
extra, imported only when the command runs. The conversations are decoded with the run's own tokenizer
(policy/, else learner.model); where it cannot be loaded they show token counts.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import random
import re
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cluster.log import is_evaluation
from cluster.trackers import flatten

EVAL_KEY = "eval/success_rate"  # plotted with its interval; log.is_evaluation tells the lines apart
ENGINES = "rollout/engine_tokens_per_s@"  # one key per rollout actor; plotted as their sum


class ReportError(ValueError):
    """Input that is not a run directory; the message names the path and what was expected."""


@dataclass
class Run:
    path: Path
    label: str  # the legend label: the directory's name
    train: list[dict]  # one line per iteration, by iteration
    evals: list[dict]  # one line per evaluation, by iterations done
    config: dict  # config.toml flattened to dotted keys; {} without one
    config_text: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directories of `freelunch train`; several are overlaid"
    )
    parser.add_argument(
        "--out", help="output directory (default: RUN_DIR/report for one run, else report-<YYYYmmdd-HHMMSS>)"
    )
    parser.add_argument(
        "--trajectories",
        type=int,
        default=4,
        metavar="N",
        help="trajectories of the last iteration shown as conversations, per run (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the trajectory sample (default 0)")


def run_report(args: argparse.Namespace) -> int:
    """The command. Bad input exits with 2 and one line naming the directory or file and what was expected."""
    try:
        if args.trajectories < 0:
            raise ReportError(f"--trajectories must be >= 0, got {args.trajectories}")
        runs = label_runs([load_run(Path(path)) for path in args.runs])
    except ReportError as error:
        print(f"freelunch: {error}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("freelunch: the report needs matplotlib: pip install 'freelunch[report]'", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    else:
        out = runs[0].path / "report" if len(runs) == 1 else Path(f"report-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"freelunch: --out {out}: cannot create the directory ({error.strerror or error})", file=sys.stderr)
        return 2
    pictures = write_report(out, runs, num_trajectories=args.trajectories, seed=args.seed)
    print(f"freelunch: wrote {out / 'index.html'} and {len(pictures)} PNGs")
    return 0


# --- reading a run ---
def load_run(path: Path) -> Run:
    if not path.is_dir():
        raise ReportError(f"{path}: no such directory; expected the run directory of `freelunch train`")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise ReportError(
            f"{path}: no metrics.jsonl; expected the run directory of `freelunch train`, which writes one line there "
            "per iteration"
        )
    train, evals = read_metrics(metrics)
    if not train and not evals:
        raise ReportError(f"{metrics}: no lines yet; the run has not finished an iteration")
    config = path / "config.toml"
    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    try:
        flat = flatten(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise ReportError(f"{config}: not valid TOML ({error})") from None
    return Run(path=path, label=path.resolve().name, train=train, evals=evals, config=flat, config_text=text)


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """The train lines and the eval lines, each by iteration; a later line for the same iteration wins."""
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines) and not text.endswith("\n"):
                continue  # the run is writing this line right now
            raise ReportError(f"{path}:{lineno}: not valid JSON; expected one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise ReportError(f"{path}:{lineno}: expected a JSON object with an integer 'iteration'")
        (evals if is_evaluation(record) else train)[record["iteration"]] = record
    return [train[i] for i in sorted(train)], [evals[i] for i in sorted(evals)]


def label_runs(runs: list[Run]) -> list[Run]:
    """Directory names as labels; runs whose directories share a name get their position added."""
    names = [run.label for run in runs]
    for i, run in enumerate(runs):
        if names.count(run.label) > 1:
            run.label = f"{names[i]} #{i + 1}"
    return runs


def number(value) -> float:
    """A metric value as a float; null (a NaN when it was written) and anything not a number are NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


# --- figures ---
@dataclass(frozen=True)
class Series:
    """One line per run: a metric key against the iteration (train lines) or the iterations done (eval lines)."""

    key: str  # ENGINES sums every rollout actor's key
    name: str = ""  # added to the run's label in the legend
    evals: bool = False
    style: str = "o-"
    band: tuple[str, str] | None = None  # the keys of a shaded interval's low and high ends


@dataclass(frozen=True)
class Profile:
    """One line per run over the integer suffix of `prefix<t>` keys (a step, a staleness).

    which: "last" plots the last train line having such keys (and the first one, dashed), "mean" their mean over
    the train lines having any (a key missing from a line counts 0 there: the keys are the shares of a histogram).
    """

    prefix: str
    which: str
    xlabel: str


@dataclass(frozen=True)
class Panel:
    title: str
    lines: tuple  # Series or Profile
    xlabel: str = "iteration"  # a Profile's own xlabel wins


VERSION = "policy version (train: iteration)"
FIGURES = {
    "learning.png": (
        "Learning curves",
        "Train values are those of each iteration's own rollouts, played by policy version ~i (rollouts can run "
        "ahead, see staleness); eval values are at k = iterations done, the policy trained for k iterations, on the "
        "eval split, with the 95% interval of the success rate shaded. Both sit at the version that played.",
        (
            Panel(
                "success rate",
                (
                    Series("rollout/success_rate", "train"),
                    Series(
                        EVAL_KEY,
                        "eval",
                        evals=True,
                        style="s:",
                        band=("eval/success_interval_low", "eval/success_interval_high"),
                    ),
                ),
                VERSION,
            ),
            Panel(
                "outcome mean",
                (Series("rollout/outcome_mean", "train"), Series("eval/outcome_mean", "eval", evals=True, style="s:")),
                VERSION,
            ),
            Panel(
                "steps per trajectory",
                (Series("rollout/steps_mean", "train"), Series("eval/steps_mean", "eval", evals=True, style="s:")),
                VERSION,
            ),
        ),
    ),
    "update.png": (
        "The update",
        "The learner's losses and optimiser, one value per iteration.",
        (
            Panel("policy loss", (Series("loss/policy"),)),
            Panel("KL to the reference", (Series("loss/kl"),)),
            Panel("gradient norm", (Series("loss/grad_norm"),)),
            Panel("entropy", (Series("loss/entropy"),)),
            Panel("learning rate", (Series("loss/lr"),)),
        ),
    ),
    "phases.png": (
        "Phase times",
        "Seconds per iteration: collect is the wait for the iteration's trajectories, then scoring, the update and "
        "the weight broadcast; iteration is the whole.",
        tuple(
            Panel(f"{phase} (s)", (Series(f"time/{phase}"),))
            for phase in ("collect", "score", "update", "broadcast", "iteration")
        ),
    ),
    "throughput.png": (
        "Throughput",
        "Action tokens per second of the whole iteration (the loop), the engines' generation rate while they "
        "stepped (summed over rollout actors), and the length of the responses.",
        (
            Panel("loop action tokens/s", (Series("rollout/sustained_tokens_per_s"),)),
            Panel("engine tokens/s (sum)", (Series(ENGINES),)),
            Panel(
                "response tokens",
                (
                    Series("rollout/response_tokens_mean", "mean"),
                    Series("rollout/response_tokens_max", "max", style="^--"),
                ),
            ),
            Panel("truncated share", (Series("rollout/truncated_share"),)),
        ),
    ),
    "progress.png": (
        "Progress advantage",
        "By step: the mean progress advantage at each step position in the last iteration (first iteration "
        "dashed). Then its mean per iteration, the AUROC of the trajectory's mean progress advantage against "
        "success, and the share of the advantage's magnitude that the progress term contributes.",
        (
            Panel("progress advantage by step", (Profile("score/progress_adv_step_", "last", "step"),)),
            Panel("progress advantage mean", (Series("score/progress_adv_mean"),)),
            Panel("AUROC against the outcome", (Series("score/auroc"),)),
            Panel("progress share of the advantage", (Series("score/progress_share"),)),
        ),
    ),
    "failure.png": (
        "Failure steps",
        "Where failed trajectories (outcome <= 0.5) are predicted to have failed: the step of the minimum of the "
        "cumulative progress advantage, as a share of the failed trajectories, averaged over the iterations that "
        "had any.",
        (Panel("predicted failure step", (Profile("score/failure_step_", "mean", "step"),)),),
    ),
    "staleness.png": (
        "Staleness",
        "Policy versions between the learner and the policy that played a trajectory, per iteration, and the "
        "share of trajectories at each staleness over the run.",
        (
            Panel(
                "staleness",
                (Series("rollout/staleness_mean", "mean"), Series("rollout/staleness_max", "max", style="^--")),
            ),
            Panel("share of trajectories", (Profile("rollout/staleness_", "mean", "staleness"),)),
        ),
    ),
}


def series_points(run: Run, series: Series, key: str | None = None) -> tuple[list[int], list[float]]:
    """x and y of a series (NaN where a line has the key as null); empty when no line has the key."""
    key = key or series.key
    points = []
    for line in run.evals if series.evals else run.train:
        if key == ENGINES:
            engines = [number(v) for k, v in line.items() if k.startswith(ENGINES)]
            if engines:
                points.append((line["iteration"], sum(engines)))
        elif key in line:
            points.append((line["iteration"], number(line[key])))
    return [x for x, _ in points], [y for _, y in points]


def profile_points(run: Run, profile: Profile) -> list[tuple[str, list[int], list[float]]]:
    """(name, x, y) curves of a Profile for one run; [] when no train line has its keys."""
    pattern = re.compile(re.escape(profile.prefix) + r"(\d+)$")

    def of(line: dict) -> dict[int, float]:
        return {int(m.group(1)): number(v) for k, v in line.items() if (m := pattern.match(k))}

    lines = [(line["iteration"], found) for line in run.train if (found := of(line))]
    if not lines:
        return []
    if profile.which == "mean":
        steps = sorted({t for _, found in lines for t in found})
        means = [sum(found.get(t, 0.0) for _, found in lines) / len(lines) for t in steps]
        return [("", steps, means)]
    shown = [lines[-1]] if len(lines) == 1 else [lines[-1], lines[0]]
    return [(f"iteration {iteration}", sorted(found), [found[t] for t in sorted(found)]) for iteration, found in shown]


def build_figures(plt, runs: list[Run]) -> dict[str, tuple[str, str, object]]:
    """PNG name -> (title, caption, matplotlib figure) for every figure with data in at least one run.

    Every line carries its run's label as gid, and in the legend it starts with that label (several runs) or is the
    series' own name (one run); run i is drawn in colour Ci.
    """
    figures = {}
    for name, (title, caption, panels) in FIGURES.items():
        drawn = [panel for panel in panels if _has_data(panel, runs)]
        if not drawn:
            continue
        columns = min(3, len(drawn))
        rows = -(-len(drawn) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False)
        for ax, panel in zip(axes.flat, drawn):
            _draw_panel(ax, panel, runs)
        for ax in list(axes.flat)[len(drawn) :]:
            ax.axis("off")
        figure.tight_layout()
        figures[name] = (title, caption, figure)
    return figures


def _has_data(panel: Panel, runs: list[Run]) -> bool:
    for run in runs:
        for line in panel.lines:
            if isinstance(line, Profile) and profile_points(run, line):
                return True
            if isinstance(line, Series) and any(not math.isnan(y) for y in series_points(run, line)[1]):
                return True
    return False


def _draw_panel(ax, panel: Panel, runs: list[Run]) -> None:
    xlabel = panel.xlabel
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        for line in panel.lines:
            if isinstance(line, Profile):
                xlabel = line.xlabel
                for n, (name, x, y) in enumerate(profile_points(run, line)):
                    label = _label(run, name, len(runs))
                    style = "o-" if n == 0 else "o--"
                    ax.plot(x, y, style, color=color, markersize=4, label=label, gid=run.label, alpha=1 - 0.5 * n)
                continue
            x, y = series_points(run, line)
            if all(math.isnan(v) for v in y):
                continue
            ax.plot(x, y, line.style, color=color, markersize=4, label=_label(run, line.name, len(runs)), gid=run.label)
            if line.band:
                low, high = (series_points(run, line, key)[1] for key in line.band)
                if len(low) == len(high) == len(x) > 1:
                    ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)
                elif len(low) == len(high) == len(x) == 1:  # a band of one point: its error bar
                    ax.errorbar(x, y, yerr=[[y[0] - low[0]], [high[0] - y[0]]], color=color, capsize=4, fmt="none")
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    xs = [int(x) for line in ax.lines for x in line.get_xdata()]
    if xs and max(xs) - min(xs) < 2:  # one or two points: whole-number ticks, not a span of fractions around them
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        ax.set_xticks(range(min(xs), max(xs) + 1))
    ax.grid(alpha=0.3)
    if len(runs) > 1 or len(ax.lines) > 1:
        ax.legend(fontsize=7)


def _label(run: Run, name: str, num_runs: int) -> str:
    return f"{run.label} {name}".strip() if num_runs > 1 else (name or run.label)


# --- trajectories ---
def sample_rows(success: list[bool], n: int, rng: random.Random) -> list[int]:
    """n rows in a seeded random order, one failed and one successful first where both exist; in row order."""
    rows = list(range(len(success)))
    rng.shuffle(rows)
    chosen = []
    for wanted in (False, True):
        row = next((r for r in rows if bool(success[r]) == wanted), None)
        if row is not None and len(chosen) < n:
            chosen.append(row)
    chosen += [r for r in rows if r not in chosen][: n - len(chosen)]
    return sorted(chosen)


def load_tokenizer(run: Run):
    """(tokenizer or None, why not): the run's policy/ tokenizer, else that of learner.model."""
    policy = run.path / "policy"
    model = str(run.config.get("learner.model", ""))
    try:
        from transformers import AutoTokenizer

        if (policy / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(policy), ""
        if not model:
            return None, f"{run.path} has no policy/ tokenizer and its config.toml names no learner.model"
        from cluster.models import resolve_model

        return AutoTokenizer.from_pretrained(resolve_model(model)), ""
    except Exception as error:  # any failure to load only costs the decoded text, not the report
        return None, f"the tokenizer of {model or policy} cannot be loaded here ({type(error).__name__}: {error})"


CHATML_TURN = re.compile(r"<\|im_start\|>([^\n]*)\n(.*?)(?=<\|im_start\|>|\Z)", re.S)


def chat_turns(text: str) -> list[tuple[str, str]]:
    """(role, content) of ChatML text, without the empty generation prompt; other templates: one ("text", text)."""
    turns = [(role, body.replace("<|im_end|>", "").strip("\n")) for role, body in CHATML_TURN.findall(text)]
    turns = [(role, body) for role, body in turns if body or role != "assistant"]
    if turns:
        return turns
    return [("text", text)] if text.replace("<|im_end|>", "").strip() else []


def segments(transcript) -> list[tuple[str, int, list[int]]]:
    """(kind, step, ids) in order: "prompt" (step -1), then per step t its "action" and the "env" context after it.

    The spans are those of actors/transcript.py's Parquet reader: runs of equal step_index, the actions numbered
    in order (a step with no action tokens has an empty span).
    """
    ids, out, step = transcript.tokens.ids, [], -1
    for (start, end), action in zip(transcript.tokens.spans, transcript.tokens.is_action):
        if action:
            step += 1
        out.append(("action" if action else "env" if step >= 0 else "prompt", step, ids[start:end]))
    return out


def trajectory_html(transcript, row: dict, tokenizer) -> str:
    progress, advantage, rewards = (row.get(k) or [] for k in ("progress_adv", "step_advantage", "step_rewards"))
    verdict = "success" if row.get("success") else "failure"
    facts = [
        f"task {row.get('task_id')}",
        verdict,
        f"outcome {_fmt(row.get('outcome'))}",
        f"{row.get('num_steps')} steps",
        f"finish {row.get('finish_reason')}",
        f"policy version {row.get('policy_version')}",
        f"{len(transcript.tokens.ids)} tokens",
    ]
    parts = [
        f"<div class='trajectory {verdict}'><h3>{html.escape(transcript.trajectory_id)}</h3>",
        f"<p class='facts'>{html.escape(' · '.join(facts))}</p>",
    ]
    if row.get("error"):
        parts.append(f"<p class='facts'>error: {html.escape(str(row['error']))}</p>")
    for kind, step, ids in segments(transcript):
        if kind == "action":
            head = [f"agent step {step}"]
            for name, values in (("progress advantage", progress), ("step advantage", advantage), ("reward", rewards)):
                if step < len(values):
                    head.append(f"{name} {_fmt(values[step], sign=True)}")
            sign = "neg" if step < len(progress) and number(progress[step]) < 0 else "pos"
            text = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer else f"{len(ids)} tokens"
            parts.append(_box(f"agent {sign}", " · ".join(head), text or "(no tokens)"))
        elif tokenizer is None:
            parts.append(_box(kind, "prompt" if kind == "prompt" else f"env after step {step}", f"{len(ids)} tokens"))
        elif tokenizer.decode(ids, skip_special_tokens=True).strip():  # not just the eos that closes a cut action
            for role, content in chat_turns(tokenizer.decode(ids, skip_special_tokens=False)):
                label = role if kind == "prompt" else f"env ({role})"
                parts.append(_box("prompt" if kind == "prompt" else "env", label, content))
    parts.append("</div>")
    return "\n".join(parts)


def _box(kind: str, label: str, text: str) -> str:
    return f"<div class='msg {kind}'><div class='role'>{html.escape(label)}</div><pre>{html.escape(text)}</pre></div>"


def trajectories_html(run: Run, num_trajectories: int, seed: int) -> str:
    from actors.transcript import InputError, read_transcripts

    files = sorted((run.path / "trajectories").glob("iteration_*.parquet"))
    heading = f"<h2>Trajectories: {html.escape(run.label)}</h2>"
    if not files:
        return f"{heading}\n<p class='note'>No trajectories/iteration_*.parquet in {html.escape(str(run.path))}.</p>"
    import pyarrow.parquet as pq

    try:
        transcripts, _ = read_transcripts(files[-1], "parquet")
        table = pq.read_table(files[-1])
    except (InputError, OSError) as error:
        return f"{heading}\n<p class='note'>{html.escape(str(error))}</p>"
    columns = ("task_id", "success", "outcome", "num_steps", "finish_reason", "policy_version", "error")
    columns += ("progress_adv", "step_advantage", "step_rewards")
    data = {name: table.column(name).to_pylist() for name in columns if name in table.column_names}
    rows = [{name: values[i] for name, values in data.items()} for i in range(table.num_rows)]
    chosen = sample_rows([row.get("success", False) for row in rows], num_trajectories, random.Random(seed))
    tokenizer, why_not = load_tokenizer(run) if chosen else (None, "")
    parts = [
        heading,
        f"<p class='note'>{len(chosen)} of the {len(rows)} trajectories of {html.escape(files[-1].name)} (seed "
        f"{seed}; a failed and a successful one first where both exist). Agent boxes are green where the step's "
        "progress advantage is >= 0, red where it is negative.</p>",
    ]
    if why_not:
        parts.append(f"<p class='note'>Shown as token counts: {html.escape(why_not)}.</p>")
    parts += [trajectory_html(transcripts[i], rows[i], tokenizer) for i in chosen]
    return "\n".join(parts)


# --- the page ---
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; height: auto; }
.caption, .note { color: #555; font-size: 0.9em; max-width: 70em; }
.trajectory { border: 1px solid #bbb; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }
.trajectory.success { border-left: 6px solid #2a8a2a; }
.trajectory.failure { border-left: 6px solid #b03030; }
.trajectory h3 { margin: 0.2em 0; font-size: 1em; }
.facts { margin: 0.2em 0 0.6em; font-size: 0.85em; color: #444; }
.msg { border-radius: 4px; margin: 0.4em 0; padding: 0.3em 0.6em; }
.msg .role { font-size: 0.8em; font-weight: bold; color: #444; }
.msg pre { white-space: pre-wrap; word-break: break-word; margin: 0.2em 0; max-height: 18em; overflow: auto; }
.prompt { background: #eef0f5; }
.env { background: #f4f4f4; }
.agent.pos { background: #e7f5e7; border-left: 4px solid #2a8a2a; }
.agent.neg { background: #fbeaea; border-left: 4px solid #b03030; }
"""


def write_report(out: Path, runs: list[Run], *, num_trajectories: int = 4, seed: int = 0) -> list[str]:
    """Write the PNGs and index.html into out; returns the PNG names. PNGs of an earlier report that this one
    has no data for are removed, so the directory holds only what the page shows."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figures = build_figures(plt, runs)
    for name, (_, _, figure) in figures.items():
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
    for name in FIGURES.keys() - figures.keys():
        (out / name).unlink(missing_ok=True)
    title = "freelunch report: " + ", ".join(run.label for run in runs)
    body = [f"<h1>{html.escape(title)}</h1>", summary_table(runs), config_html(runs)]
    for name, (figure_title, caption, _) in figures.items():
        body += [
            f"<h2>{html.escape(figure_title)}</h2>",
            f"<p class='caption'>{html.escape(caption)}</p>",
            f"<p><img src='{name}' alt='{html.escape(figure_title)}'></p>",
        ]
    if num_trajectories:
        body += [trajectories_html(run, num_trajectories, seed) for run in runs]
    page = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>\n"
        "<link rel='icon' href='data:,'>\n"  # no favicon request: the page loads nothing from outside its folder
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    from cluster.files import write_atomically

    write_atomically(out / "index.html", page)
    return list(figures)


def summary_table(runs: list[Run]) -> str:
    head = [
        "run",
        "iterations",
        "policy version",
        "train success",
        "train outcome",
        "eval success [95%] at k",
        "s per iteration",
        "total time",
        "loop tokens/s",
        "model",
        "env",
    ]
    rows = []
    for run in runs:
        last = run.train[-1] if run.train else {}
        times = [t for m in run.train if not math.isnan(t := number(m.get("time/iteration")))]
        rates = [r for m in run.train if not math.isnan(r := number(m.get("rollout/sustained_tokens_per_s")))]
        evaluation = "–"
        if run.evals:
            e = run.evals[-1]
            interval = f"[{_fmt(e.get('eval/success_interval_low'))}, {_fmt(e.get('eval/success_interval_high'))}]"
            evaluation = f"{_fmt(e.get(EVAL_KEY))} {interval} at {e['iteration']}"
        rows.append(
            [
                run.label,
                str(len(run.train)),
                str(last.get("policy_version", "–")),
                _fmt(last.get("rollout/success_rate")),
                _fmt(last.get("rollout/outcome_mean")),
                evaluation,
                _fmt(sum(times) / len(times) if times else None, 1),
                _duration(sum(times)) if times else "–",
                _fmt(sum(rates) / len(rates) if rates else None, 1),
                str(run.config.get("learner.model", "–")),
                str(run.config.get("env.name", "–")),
            ]
        )
    return (
        "<h2>Runs</h2>\n"
        + _table(head, rows)
        + (
            "<p class='note'>Train values are those of the last iteration; times and tokens/s are means over the "
            "iterations, total time their sum.</p>"
        )
    )


def config_html(runs: list[Run]) -> str:
    if len(runs) == 1:
        run = runs[0]
        if not run.config_text:
            return f"<p class='note'>{html.escape(str(run.path))} has no config.toml.</p>"
        return f"<details><summary>config.toml</summary><pre>{html.escape(run.config_text)}</pre></details>"
    keys = sorted({key for run in runs for key in run.config})
    missing = object()
    differ = [key for key in keys if len({repr(run.config.get(key, missing)) for run in runs}) > 1]
    if not differ:
        return "<h2>Config</h2>\n<p class='note'>The runs' config.toml files set the same values.</p>"
    rows = [[key, *(_value(run.config[key]) if key in run.config else "–" for run in runs)] for key in differ]
    return "<h2>Config differences</h2>\n" + _table(["key", *(run.label for run in runs)], rows)


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    cells += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "<table>\n" + "\n".join(cells) + "\n</table>"


def _fmt(value, digits: int = 3, sign: bool = False) -> str:
    value = number(value)
    return "–" if math.isnan(value) else f"{value:{'+' if sign else ''}.{digits}f}"


def _value(value) -> str:
    """A config value as TOML writes it: strings quoted, true/false."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str | list | dict | bool) else str(value)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"
