"""report.html for `freelunch score --report DIR`: the summary and PNG plots, made with matplotlib.

cluster/score.py -> [score_report]. Plots: the per-step progress advantage of up to 8 trajectories (under
--task fa with the predicted and the annotated failure step), ROC curves (--task uq) and a best-of-N bar
chart (--task bon). matplotlib is the `report` extra, imported only when a report is written. The page of a
training run is `freelunch report` (cluster/report.py).
"""

import html
import json
from pathlib import Path

import numpy as np

from actors.transcript import Transcript
from learner.aggregate import predict_failure

MAX_CURVES = 8
PREDICTOR = "min_cumulative"  # the failure step marked on the curves (PAPER.md §3.5)


def write_report(
    report_dir: Path, summary: dict, transcripts: list[Transcript], step_scores: list, scores: dict
) -> None:
    """Write the PNGs and report.html into report_dir (summary.json is written by the caller)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    task = summary["task"]
    figures = {"steps.png": _step_curves(plt, transcripts, step_scores, mark_failure=task == "fa")}
    if task == "uq":
        figures["roc.png"] = _roc_curves(plt, scores, [t.reward for t in transcripts], summary["uq"])
    if task == "bon":
        figures["bon.png"] = _bon_bars(plt, summary["bon"])
    for name, figure in figures.items():
        figure.savefig(report_dir / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
    images = "\n".join(f'<p><img src="{name}" alt="{name}"></p>' for name in figures)
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>freelunch score</title></head><body>\n"
        f"<h1>freelunch score: {summary['num_trajectories']} trajectories "
        f"({summary['num_truncated']} truncated)</h1>\n"
        f"<p>policy {html.escape(str(summary.get('policy')))}, reference {html.escape(str(summary.get('ref')))}; "
        f"token aggregation {summary.get('token_agg')}, step aggregation {summary.get('step_agg')}</p>\n"
        f"{images}\n<h2>summary.json</h2>\n<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>\n"
        "</body></html>\n"
    )
    (report_dir / "report.html").write_text(page, encoding="utf-8")


def _step_curves(plt, transcripts: list[Transcript], step_scores: list, *, mark_failure: bool):
    """One panel per trajectory: step scores and their running sum over the message index."""
    shown = list(range(min(MAX_CURVES, len(transcripts))))
    columns = min(4, max(1, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for panel, ax in enumerate(axes.flat):
        if panel >= len(shown):
            ax.axis("off")
            continue
        steps = step_scores[shown[panel]]
        x = [i for i, s in enumerate(steps) if s is not None]
        y = [steps[i] for i in x]
        ax.plot(x, y, marker="o", label="step")
        ax.plot(x, np.cumsum(np.nan_to_num(np.array(steps, dtype=float)))[x], linestyle="--", label="running sum")
        if mark_failure and x:
            ax.axvline(predict_failure(steps, PREDICTOR), color="red", label=f"predicted ({PREDICTOR})")
            mistake = transcripts[shown[panel]].mistake_step
            if mistake is not None:
                ax.axvline(mistake, color="green", linestyle=":", label="mistake_step")
        ax.set_title(transcripts[shown[panel]].trajectory_id[:40], fontsize=9)
        ax.set_xlabel("message index")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.axhline(0.0, color="grey", linewidth=0.5)
    axes.flat[0].set_ylabel("progress advantage")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def _roc_curves(plt, scores: dict, rewards: list, metrics: dict):
    figure, ax = plt.subplots(figsize=(5, 5))
    for method, values in scores.items():
        kept = [(s, r) for s, r in zip(values, rewards) if s is not None and r is not None]
        success = np.array([r > 0.5 for _, r in kept])
        if success.all() or not success.any():
            continue  # one class: no curve
        fpr, tpr = roc_points(np.array([s for s, _ in kept], dtype=float), success)
        ax.plot(fpr, tpr, label=f"{method} (AUROC {metrics[method]['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("success (reward > 0.5) predicted by the score")
    ax.legend(fontsize=8)
    return figure


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score threshold, from (0, 0) to (1, 1); both classes must be present."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tps, fps = np.cumsum(hits)[last_of_tie], np.cumsum(~hits)[last_of_tie]
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def _bon_bars(plt, bon: dict):
    first = next(iter(bon.values()))
    names = ["Mean@N", *(f"BoN {m}" for m in bon), "Pass@N"]
    values = [first["mean_at_n"], *(bon[m]["bon_success_rate"] for m in bon), first["pass_at_n"]]
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, values, color=["grey", *["C0"] * len(bon), "grey"])
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("success rate")
    ax.set_title(f"best-of-N over {first['num_tasks']} tasks")
    ax.tick_params(axis="x", labelsize=8)
    return figure
