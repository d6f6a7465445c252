"""[env] TextArena (`textarena/<env id>`): single-player text puzzles, behind the extra of that name.

Pure Python, sub-millisecond steps. The games offered are the single-player ones that run offline (no NLTK
corpus, no API key). TextArena scores a game only when it ends, so every reward comes on the last step:
the game's final reward clamped to [0, 1] (partial credit where the game gives it, e.g. TowerOfHanoi's share
of disks placed); success = reward 1. An invalid move is a normal step: the invalid-move allowance is
raised so that only our max_steps ends a game early. No folds: splits come from envs.tasks.split_tasks.
"""

from envs.adapter import Progress, require, sanitised
from envs.base import StepResult, Task
from envs.tasks import split_tasks

GAMES = (
    "TowerOfHanoi-v0",
    "FrozenLake-v0",
    "Sokoban-v0",
    "Minesweeper-v0-small",
    "GuessTheNumber-v0",
    "Mastermind-v0",
    "LightsOut-v0",
    "FifteenPuzzle-v0",
    "Sudoku-v0-very-easy",
    "2048-v0-ultra-easy",
)


class TextArena:
    def __init__(self, game: str, seed: int = 0, max_steps: int = 20, num_tasks: int = 512):
        """seed is unused: the task seed fixes the game's layout and TextArena's own luck."""
        self._textarena = require("textarena", "textarena")
        if game not in GAMES:
            raise ValueError(f"textarena: unknown game {game!r}; games: {', '.join(GAMES)}")
        self.game, self.max_steps, self.num_tasks = game, max_steps, num_tasks
        self._env = None
        self._progress = Progress(max_steps)

    def tasks(self, split: str) -> list[Task]:
        return split_tasks(f"textarena/{self.game}", split, self.num_tasks)

    def reset(self, task: Task) -> str:
        # The "-raw" registration has no observation wrappers: we get each step's new messages, not the history.
        self._env = self._textarena.make(f"{self.game}-raw")
        # TextArena seeds Python's global `random` from the task seed here, which fixes the layout.
        self._env.reset(num_players=1, seed=task.seed)
        self._env.state.error_allowance = 10**9  # default: a second invalid move in a row ends the game
        self._progress = Progress(self.max_steps)
        return self._messages()

    def step(self, action: str) -> StepResult:
        game_over, _ = self._env.step(action=sanitised(action))
        text = self._messages()
        score = 0.0
        if game_over:
            score = _final_reward(self._env.state.rewards)
            text = f"{text}\n{self._env.state.game_info[0].get('reason', 'The game is over.')}".strip()
        reward, out_of_steps = self._progress.advance(score)
        done = bool(game_over) or out_of_steps
        return StepResult(text, reward, done, success=bool(game_over) and score >= 1.0 if done else None)

    def _messages(self) -> str:
        """The game's messages since the last call, without the echo of the player's own action."""
        _, messages = self._env.get_observation()
        kind = self._textarena.ObservationType.PLAYER_ACTION
        return "\n".join(text.strip() for _, text, what in messages if what != kind).strip()


def _final_reward(rewards: dict | None) -> float:
    """Player 0's reward, as a float in [0, 1] (some games hand back a string or -1 for a loss)."""
    try:
        return min(max(float((rewards or {}).get(0, 0.0)), 0.0), 1.0)
    except (TypeError, ValueError):
        return 0.0
