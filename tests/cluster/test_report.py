"""`freelunch report`: bad input, old runs, the overlay of several runs, and the page in headless Chromium.

The browser checks drive Debian's `chromium` over the DevTools protocol (`Browser` below): the load event fires,
every image loads, there is one image per PNG written, and no console error, exception or failed request
appears. They run on a run directory built here from the real schema (tokens from the tiny model's tokenizer)
and, marked slow, on a real 2-iteration `freelunch train` of cluster/configs/cpu_smoke.toml with evaluations.

A screenshot of any page, e.g. for the README:

    .venv/bin/python tests/cluster/test_report.py runs/DIR/report/index.html cluster/deploy/img/run-report.png
"""

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from actors.render import Conversation
from actors.trajectory import Trajectory, to_table, with_columns, write_parquet
from cluster.cli import main
from cluster.config import dump, load

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster" / "configs" / "cpu_smoke.toml"
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
BIN = Path(sys.executable).parent  # the venv's freelunch script
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
}


# --- a run directory with the files `freelunch train` writes ---
def make_run(run_dir: Path, tokenizer, *, iterations: int = 3, evals: bool = True, new_keys: bool = True) -> Path:
    """config.toml, metrics.jsonl (train lines, and eval lines when `evals`) and one scored Parquet per iteration.

    new_keys=False writes only the keys runs wrote before loss/entropy, loss/lr, rollout/response_tokens_* and
    rollout/truncated_share existed.
    """
    (run_dir / "trajectories").mkdir(parents=True)
    (run_dir / "config.toml").write_text(dump(load(str(CONFIG))))
    rng = np.random.default_rng(0)
    lines = []
    for i in range(iterations):
        line = {
            "iteration": i,
            "policy_version": i + 1,
            "rollout/outcome_mean": 0.2 + 0.1 * i,
            "rollout/success_rate": 0.1 * i,
            "rollout/steps_mean": 3.0,
            "rollout/sustained_tokens_per_s": 50.0 + i,
            "rollout/engine_tokens_per_s@rollout-0": 400.0,
            "rollout/engine_tokens_per_s@rollout-1": 380.0 + i,
            "rollout/staleness_mean": 0.25,
            "rollout/staleness_max": 1,
            "rollout/staleness_0": 0.75,
            "rollout/staleness_1": 0.25,
            "score/progress_adv_mean": 0.01 * i,
            "score/auroc": None if i == 0 else 0.6,  # NaN (one class) is written as null
            "score/progress_share": 0.3,
            **{f"score/progress_adv_step_{t}": 0.01 * (t - i) for t in range(3)},
            "score/failure_step_0": 0.5,
            "score/failure_step_2": 0.5,
            "loss/policy": 0.1 / (i + 1),
            "loss/kl": 0.001 * i,
            "loss/grad_norm": 1.0,
            "time/collect": 5.0,
            "time/score": 1.0,
            "time/update": 2.0,
            "time/broadcast": 0.1,
            "time/iteration": 8.5,
        }
        if new_keys:
            line |= {
                "loss/entropy": 2.0,
                "loss/lr": 1e-5,
                "rollout/response_tokens_mean": 6.0,
                "rollout/response_tokens_max": 8,
                "rollout/truncated_share": 0.5,
            }
        lines.append(line)
        if evals:
            k = i + 1
            lines.append(
                {
                    "iteration": k,
                    "policy_version": k,
                    "eval/success_rate": 0.5,
                    "eval/success_interval_low": 0.1,
                    "eval/success_interval_high": 0.9,
                    "eval/outcome_mean": 0.5,
                    "eval/steps_mean": 2.5,
                    "eval/num_trajectories": 2,
                    "eval/time_s": 3.0,
                }
            )
        table = to_table([_trajectory(tokenizer, f"{i:05d}-task{n // 2}-{n % 2}", n % 3 == 0) for n in range(6)])
        steps = [np.asarray(s, dtype=np.float32) for s in table.column("step_rewards").to_pylist()]
        table = with_columns(
            table,
            ref_logp=[np.zeros(len(t), np.float32) for t in table.column("tokens").to_pylist()],
            progress_adv=[rng.normal(0, 0.1, len(s)).astype(np.float32) for s in steps],
            step_advantage=[rng.normal(0, 1, len(s)).astype(np.float32) for s in steps],
        )
        write_parquet(table, run_dir / "trajectories" / f"iteration_{i:05d}.parquet")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


def _trajectory(tokenizer, trajectory_id: str, success: bool) -> Trajectory:
    """Three steps of the agent loop's token stream: the ChatML prompt, actions with step_index t, observations."""
    conversation = Conversation(tokenizer, "you are in a corridor of rooms <b>&</b> open the red door")
    tokens = conversation.prompt_ids()
    mask, step = [False] * len(tokens), [-1] * len(tokens)
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    for t, words in enumerate(("open the blue door", "open the red door", "answer with red")):
        action = tokenizer.encode(words, add_special_tokens=False) + [eos]
        extra = conversation.add_action(action, finished=True)[1]
        context = extra + (conversation.add_observation(f"the door is open: draft {t}") if t < 2 else [])
        tokens, mask, step = tokens + action + context, mask + [True] * len(action), step + [t] * len(action)
        mask, step = mask + [False] * len(context), step + [-1] * len(context)
    return Trajectory(
        trajectory_id=trajectory_id, task_id=trajectory_id.split("-")[1], group_id=trajectory_id[:-2],
        policy_version=1, tokens=tokens, action_mask=mask, step_index=step, behavior_logp=[0.0] * len(tokens),
        step_rewards=[0.0, 0.0, 1.0 if success else 0.0], outcome=1.0 if success else 0.0, num_steps=3,
        finish_reason="done", success=success,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# --- without a browser ---
def test_bad_input_exits_2_naming_the_directory(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"freelunch: {missing}: no such directory") and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert f"freelunch: {tmp_path / 'empty'}: no metrics.jsonl; expected the run directory" in capsys.readouterr().err
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"iteration": 0}\n[1, 2]\n')
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert f"freelunch: {tmp_path / 'empty' / 'metrics.jsonl'}:2: expected a JSON object" in err
    assert not (tmp_path / "empty" / "report").exists()


def test_an_old_run_without_evals_or_new_keys_still_reports(tmp_path, tokenizer, capsys):
    run = make_run(tmp_path / "old", tokenizer, iterations=2, evals=False, new_keys=False)
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"iteration": 2, "polic')  # mid-write
    assert main(["report", str(run)]) == 0
    report = run / "report"
    page = (report / "index.html").read_text()
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == sorted(re.findall(r"<img src='([^']+)'", page))
    assert {"learning.png", "update.png", "phases.png", "throughput.png", "progress.png", "failure.png"} <= set(pngs)
    import matplotlib.pyplot as plt

    from cluster.report import build_figures, load_run

    figures = build_figures(plt, [load_run(run)])
    labels = {line.get_label() for ax in figures["learning.png"][2].axes for line in ax.lines}
    assert labels == {"train"} and "update.png" in figures  # no eval line; the update without entropy and lr
    assert {ax.get_title() for ax in figures["update.png"][2].axes if ax.lines} == {
        "policy loss",
        "KL to the reference",
        "gradient norm",
    }
    for _, _, figure in figures.values():
        plt.close(figure)
    # the conversations are decoded: the prompt's user turn, escaped; each agent step with its advantages
    assert "you are in a corridor of rooms &lt;b&gt;&amp;&lt;/b&gt; open the red door" in page
    assert page.count("agent step 2 · progress advantage ") == 4 and "env (user)" in page
    assert "failure" in page and "success" in page


def test_several_runs_share_every_figure_one_line_per_run(tmp_path, tokenizer):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cluster.report import build_figures, label_runs, load_run

    first = make_run(tmp_path / "a" / "run", tokenizer)
    second = make_run(tmp_path / "b" / "run", tokenizer, iterations=2, evals=False, new_keys=False)
    (second / "config.toml").write_text((second / "config.toml").read_text().replace("seed = 0", "seed = 7"))
    runs = label_runs([load_run(first), load_run(second)])
    assert [run.label for run in runs] == ["run #1", "run #2"]  # same directory name: told apart
    figures = build_figures(plt, runs)
    assert list(figures) == [
        "learning.png",
        "update.png",
        "phases.png",
        "throughput.png",
        "progress.png",
        "failure.png",
        "staleness.png",
    ]
    for name, (_, _, figure) in figures.items():
        drawn = [ax for ax in figure.axes if ax.lines]
        assert drawn, name
        for ax in drawn:
            gids = [line.get_gid() for line in ax.lines]
            assert set(gids) <= {"run #1", "run #2"} and "run #1" in gids, (name, ax.get_title())
            assert all(text.get_text().startswith("run #") for text in ax.get_legend().get_texts())
        # a key both runs have: both runs' lines, in their own colours
        if name in ("phases.png", "staleness.png"):
            for ax in drawn:
                assert {line.get_gid(): line.get_color() for line in ax.lines} == {"run #1": "C0", "run #2": "C1"}
        plt.close(figure)
    out = tmp_path / "overlay"
    assert main(["report", str(first), str(second), "--out", str(out), "--trajectories", "1"]) == 0
    page = (out / "index.html").read_text()
    differences = page.split("<h2>Config differences</h2>")[1].split("</table>")[0]
    assert "<td>seed</td><td>0</td><td>7</td>" in differences and "learner.model" not in differences
    assert page.count("<h2>Trajectories: run #") == 2 and page.count("class='trajectory ") == 2


def test_without_the_tokenizer_the_steps_show_token_counts(tmp_path, tokenizer):
    run = make_run(tmp_path / "elsewhere", tokenizer, iterations=1)
    config = (run / "config.toml").read_text().replace('model = "tiny-random"', 'model = "/nonexistent/model"')
    (run / "config.toml").write_text(config)
    assert main(["report", str(run), "--trajectories", "2", "--seed", "3"]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Shown as token counts: the tokenizer of /nonexistent/model cannot be loaded here" in page
    assert page.count("class='trajectory ") == 2 and "agent step 0 · progress advantage" in page


def test_the_sample_has_a_failed_and_a_successful_trajectory_and_is_seeded():
    import random

    from cluster.report import sample_rows

    success = [False] * 9 + [True]
    for seed in range(5):
        rows = sample_rows(success, 2, random.Random(seed))
        assert 9 in rows and len(rows) == 2
        assert rows == sample_rows(success, 2, random.Random(seed))
    assert sample_rows(success, 20, random.Random(0)) == list(range(10))
    assert sample_rows([True, True], 1, random.Random(0)) in ([0], [1])


# --- in the browser ---
class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (a websocket, flat sessions).

    Started in its own session so that closing stops it and its helper processes, and nothing else.
    """

    def __init__(self, binary: str = CHROMIUM or "chromium", width: int = 1280, height: int = 2000):
        from websockets.sync.client import connect

        self._exit = contextlib.ExitStack()
        self._profile = tempfile.mkdtemp(prefix="report-chromium-")
        self._process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--remote-debugging-port=0", f"--user-data-dir={self._profile}"]
            + [f"--window-size={width},{height}", "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            self._ws = self._exit.enter_context(connect(self._devtools_url(60), max_size=2**28, open_timeout=30))
            self._next_id, self.events = 0, []
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session=True)
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            self.call("Emulation.setDeviceMetricsOverride", session=True, **metrics)
        except BaseException:
            self.close()
            raise

    def _devtools_url(self, timeout_s: float) -> str:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self._process.stderr], daemon=True).start()
        deadline, seen = time.monotonic() + timeout_s, []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self._process.poll() is not None:
                    break
                continue
            seen.append(line)
            if match := re.search(r"DevTools listening on (ws://\S+)", line):
                return match.group(1)
        raise RuntimeError("chromium did not print its DevTools address:\n" + "".join(seen[-20:]))

    def call(self, method: str, session: bool = False, timeout_s: float = 60, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile go to self.events."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]

    def wait_for(self, event: str, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        return next(e for e in self.events if e.get("method") == event)

    def open(self, page: Path) -> dict:
        """Load the page; returns its images (src, complete, naturalWidth) and the errors it reported."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        script = "JSON.stringify([...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]))"
        images = json.loads(self.call("Runtime.evaluate", session=True, expression=script)["result"]["value"])
        self.call("Runtime.evaluate", session=True, expression="1")  # let late console events arrive
        return {"images": images, "errors": page_errors(self.events)}

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def close(self) -> None:
        self._exit.close()  # the websocket
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        try:
            os.killpg(self._process.pid, signal.SIGKILL)  # its own group only: renderer and helper processes
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(self._profile, ignore_errors=True)


def page_errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions, error log entries and failed requests among CDP events."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(f"console.error: {[a.get('value', a.get('description')) for a in params.get('args', [])]}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url')})")
        elif method == "Network.loadingFailed":
            errors.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
    return errors


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2000) -> None:
    """A PNG of the page's first width x height pixels."""
    browser = Browser(width=width, height=height)
    try:
        browser.open(page)
        png.write_bytes(browser.screenshot())
    finally:
        browser.close()


def check_in_browser(report: Path) -> None:
    """The page loads, every image loads, one image per PNG, nothing reports an error; the screenshot has content."""
    from io import BytesIO

    from PIL import Image

    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs, report
    browser = Browser()
    try:
        result = browser.open(report / "index.html")
        shot = browser.screenshot()
    finally:
        browser.close()
    assert result["errors"] == []
    assert sorted(src for src, _, _ in result["images"]) == pngs
    assert all(complete and width > 0 for _, complete, width in result["images"]), result["images"]
    pixels = np.asarray(Image.open(BytesIO(shot)).convert("RGB")).astype(np.uint32)
    colours = np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2])
    assert pixels.shape[:2] == (2000, 1280) and len(colours) > 50  # text and plots, not a blank page


@needs_chromium
def test_the_page_loads_in_chromium_with_every_image(tmp_path, tokenizer):
    run = make_run(tmp_path / "run", tokenizer)
    assert main(["report", str(run)]) == 0
    check_in_browser(run / "report")


@needs_chromium
def test_the_browser_check_sees_a_missing_image_and_a_script_error(tmp_path):
    """The check itself: a page with a broken image and a throwing script reports both."""
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><link rel='icon' href='data:,'></head><body><img src='gone.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    browser = Browser()
    try:
        result = browser.open(tmp_path / "index.html")
    finally:
        browser.close()
    assert result["images"] == [["gone.png", True, 0]]
    text = "\n".join(result["errors"])
    assert "console.error: ['boom']" in text and "undefinedFunction" in text and "request failed" in text


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real run: `freelunch train` of the CPU smoke config, 2 iterations, an evaluation after each."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    result = subprocess.run(
        [str(BIN / "freelunch"), "train", str(CONFIG), "cluster.eval_every=1", "cluster.eval_num_tasks=2"]
        + ["--run-dir", str(run_dir)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@needs_chromium
def test_report_of_a_real_run_and_of_two_overlaid_in_chromium(trained_run, tmp_path):
    result = subprocess.run(
        [str(BIN / "freelunch"), "report", str(trained_run)], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    page = (trained_run / "report" / "index.html").read_text()
    assert "<h2>Learning curves</h2>" in page and page.count("class='trajectory ") == 4
    evals = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/success_rate" in line for line in evals)  # the eval band is drawn from these
    check_in_browser(trained_run / "report")

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("report", "checkpoints", "policy"))
    out = tmp_path / "overlay"
    assert main(["report", str(trained_run), str(copy), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "The runs' config.toml files set the same values." in page and page.count("<h2>Trajectories: ") == 2
    check_in_browser(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: test_report.py PAGE.html OUT.png")
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
