"""[env] TextWorld (`textworld/<game>`): Inform 7 parser games generated locally, behind the extra of that name.

Each task's game is made by `tw-make` on first use (3-10 s) and cached under
`$FREELUNCH_CACHE/textworld/<hash of generator and options>/<task seed>/` (default cache ~/.cache/freelunch),
so a task is generated once per machine. The suite has no train/eval folds: splits come from
envs.tasks.split_tasks. Reward = increase of score / max_score; success = the game is won.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from envs.adapter import Progress, match_action, require, with_actions
from envs.base import StepResult, Task
from envs.tasks import split_tasks

# game -> (tw-make challenge, default options). Small games by default: a 135M policy must be able to win some.
GAMES = {
    "coin_collector": ("tw-coin_collector", ("--level", "5")),
    "treasure_hunter": ("tw-treasure_hunter", ("--level", "1")),
    "cooking": ("tw-cooking", ("--recipe", "1", "--take", "1", "--go", "1")),
    "simple": ("tw-simple", ("--rewards", "dense", "--goal", "detailed")),
}
MAKE_TIMEOUT_S = 600


def cache_root() -> Path:
    return Path(os.environ.get("FREELUNCH_CACHE", Path.home() / ".cache" / "freelunch")) / "textworld"


def game_file(challenge: str, options: tuple[str, ...], seed: int) -> Path:
    """The cached game of (challenge, options, seed), generated first if missing (atomically: tmp dir + rename)."""
    textworld = require("textworld", "textworld")
    key = json.dumps([challenge, list(options), textworld.__version__])
    target = cache_root() / hashlib.sha256(key.encode()).hexdigest()[:16] / str(seed)
    if (target / "game.z8").exists():
        return target / "game.z8"
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / "options.json").write_text(key)  # what the hash stands for, for a human reading the cache
    tmp = Path(tempfile.mkdtemp(prefix=f".{seed}-", dir=target.parent))
    try:
        _tw_make(challenge, options, seed, tmp / "game.z8")
        try:
            tmp.rename(target)
        except OSError:  # another process finished the same game first
            if not (target / "game.z8").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / "game.z8"


def _tw_make(challenge: str, options: tuple[str, ...], seed: int, output: Path) -> None:
    script = shutil.which("tw-make", path=os.path.dirname(sys.executable)) or shutil.which("tw-make")
    if script is None:
        raise RuntimeError("textworld: the tw-make script is not installed (pip install 'freelunch[textworld]')")
    command = [sys.executable, script, challenge, *options, "--seed", str(seed), "--output", str(output)]
    # Inform 7 output depends on Python's set order: only a fixed hash seed makes the game byte-identical.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command + ["-f", "--silent"], env=env, capture_output=True, text=True, timeout=MAKE_TIMEOUT_S)
    if done.returncode != 0 or not output.exists():
        raise RuntimeError(f"textworld: `{' '.join(command)}` failed ({done.returncode}): {done.stderr[-2000:]}")


def _feedback(text: str) -> str:
    """The game's reply without its layout noise: the prompt and status line it ends with (">  -= Kitchen =-0/1"),
    the interpreter's RESTART/RESTORE question after the end, indentation and runs of blank lines."""
    text = re.sub(r"\n\s*>[^\n]*$", "", text.rstrip())
    text = text.replace("Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command?", "")
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class TextWorld:
    def __init__(
        self,
        game: str,
        seed: int = 0,
        max_steps: int = 20,
        num_tasks: int = 512,
        make_options: tuple[str, ...] | list[str] | None = None,
        list_actions: bool = True,
    ):
        """seed is unused: a generated game is deterministic. make_options replaces the game's tw-make options."""
        self._textworld = require("textworld", "textworld")
        if game not in GAMES:
            raise ValueError(f"textworld: unknown game {game!r}; games: {', '.join(GAMES)}")
        self.game, self.max_steps, self.num_tasks, self.list_actions = game, max_steps, num_tasks, list_actions
        self.challenge, default_options = GAMES[game]
        self.make_options = tuple(str(option) for option in (default_options if make_options is None else make_options))
        self._env = None
        self._progress = Progress(max_steps)
        self._valid: list[str] = []
        self._max_score = 1
        self._walkthrough: list[str] = []

    def tasks(self, split: str) -> list[Task]:
        return split_tasks(f"textworld/{self.game}", split, self.num_tasks)

    def reset(self, task: Task) -> str:
        path = game_file(self.challenge, self.make_options, task.seed)
        infos = self._textworld.EnvInfos(
            admissible_commands=True,
            description=True,
            objective=True,
            max_score=True,
            won=True,
            lost=True,
            extras=["walkthrough"],
        )
        if self._env is not None:
            self._env.close()
        with warnings.catch_warnings():
            # Jericho does not know generated games and says so; TextWorld itself tracks score and the end.
            warnings.filterwarnings("ignore", message=".*is not fully supported")
            self._env = self._textworld.start(str(path), request_infos=infos)
            state = self._env.reset()
        self._progress, self._max_score = Progress(self.max_steps), max(state["max_score"], 1)
        self._walkthrough = list(state["extra.walkthrough"] or [])
        self._valid = sorted(state["admissible_commands"])
        return with_actions(
            f"{state['objective']}\n\n{_feedback(state['description'])}", self._valid, self.list_actions
        )

    def step(self, action: str) -> StepResult:
        state, score, game_over = self._env.step(frotz_command(match_action(action, self._valid)))
        reward, out_of_steps = self._progress.advance(score / self._max_score)
        done = bool(game_over) or bool(state["won"]) or bool(state["lost"]) or out_of_steps
        self._valid = [] if done else sorted(state["admissible_commands"])
        text = with_actions(_feedback(state["feedback"]), self._valid, self.list_actions)
        return StepResult(text, reward, done, success=bool(state["won"]) if done else None)

    def walkthrough(self) -> list[str]:
        """The generator's winning command sequence for the current task."""
        return self._walkthrough


ZMACHINE_INPUT_BYTES = 197  # jericho cuts a longer command (its INPUT_BUFFER_SIZE, 198) and can fail on the cut


def frotz_command(command: str) -> str:
    """A command the Z-machine interpreter reads as game input. The Z-machine reads ASCII, so other characters
    are dropped; the command is cut to ZMACHINE_INPUT_BYTES. Dumb-frotz takes a line that starts with a backslash
    as one of its own commands ("\\help"), and on such a line jericho's step never returns: leading backslashes go."""
    text = command.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"^[\s\\]+", "", text)[:ZMACHINE_INPUT_BYTES].strip()
