"""[env] TextMDP: a small finite-horizon stochastic MDP rendered as text, for the theory check.

The model is public data (`transitions`, `rewards`, `horizon`, `action_words`), so learner/soft_value.py
can solve it exactly and benchmarks/theory_check.py can compare beta * log pi_theta/pi_ref with the
optimal advantage A* (PAPER.md §2.2). An observation names the state, the step and the actions, e.g.
"state 2, step 1 of 3. actions: red, blue, green"; an action is one of those words.
"""

import random
import re

from envs.base import StepResult, Task
from envs.tasks import split_tasks

ACTION_WORDS = ("red", "blue", "green", "yellow")


class TextMDP:
    def __init__(
        self,
        seed: int = 0,
        num_states: int = 5,
        num_actions: int = 3,
        max_steps: int = 3,
        mdp_seed: int = 0,
        concentration: float = 0.5,
        action_words: tuple[str, ...] = ACTION_WORDS,
        num_tasks: int = 64,
    ):
        """seed drives the transition luck; mdp_seed the model itself; max_steps is the horizon H.

        P(.|s, a) is a Dirichlet(concentration) draw over all states, r(s, a) uniform in [0, 1].
        """
        if num_states < 2 or max_steps < 1:
            raise ValueError(f"mdp: need num_states >= 2 and max_steps >= 1, got {num_states}, {max_steps}")
        if not 2 <= num_actions <= len(action_words):
            raise ValueError(f"mdp: num_actions must be in 2..{len(action_words)}, got {num_actions}")
        self.action_words = tuple(word.lower() for word in action_words[:num_actions])
        if len(set(self.action_words)) != num_actions or not all(w.isalpha() for w in self.action_words):
            raise ValueError(f"mdp: action words must be distinct single words, got {self.action_words}")
        self.num_states, self.num_actions, self.horizon, self.num_tasks = num_states, num_actions, max_steps, num_tasks
        model = random.Random(mdp_seed)
        self.transitions = tuple(
            tuple(_dirichlet(model, concentration, num_states) for _ in range(num_actions)) for _ in range(num_states)
        )  # (S, A, S): P(s'|s, a)
        self.rewards = tuple(tuple(model.random() for _ in range(num_actions)) for _ in range(num_states))  # (S, A)
        self._luck = random.Random(seed)
        self.state = self.t = 0  # the current state and step, readable by a caller that needs the true state

    def tasks(self, split: str) -> list[Task]:
        """Tasks differ only by their start state, task.seed % num_states."""
        return split_tasks("mdp", split, self.num_tasks)

    def reset(self, task: Task) -> str:
        self.state, self.t = task.seed % self.num_states, 0
        return self.observation(self.state, self.t)

    def step(self, action: str) -> StepResult:
        a = self.parse(action)
        state = self.state
        self.t += 1
        if a is None:
            text, reward = f"That is not an action here. Answer with one of: {', '.join(self.action_words)}.", 0.0
        else:
            self.state = _draw(self._luck, self.transitions[state][a])
            text, reward = f"You took {self.action_words[a]}.", self.rewards[state][a]
        info = {"state": state, "action": a, "next_state": self.state}
        if self.t >= self.horizon:
            return StepResult(f"{text} The end.", reward, True, info)
        return StepResult(f"{text}\n{self.observation(self.state, self.t)}", reward, False, info)

    def observation(self, state: int, t: int) -> str:
        """The text of state `state` at step index t (0-based; shown 1-based)."""
        return f"state {state}, step {t + 1} of {self.horizon}. actions: {', '.join(self.action_words)}"

    def parse(self, action: str) -> int | None:
        """Index of the first action word named in the text (case-insensitive, whole words), or None."""
        match = re.search(r"\b(" + "|".join(self.action_words) + r")\b", action.lower())
        return self.action_words.index(match.group(1)) if match else None


def _dirichlet(rng: random.Random, concentration: float, size: int) -> tuple[float, ...]:
    draws = [rng.gammavariate(concentration, 1.0) for _ in range(size)]
    total = sum(draws)
    return tuple(d / total for d in draws)


def _draw(rng: random.Random, probs: tuple[float, ...]) -> int:
    """Index drawn from `probs`; the last index absorbs rounding so the sum need not be exactly 1."""
    u, total = rng.random(), 0.0
    for i, p in enumerate(probs[:-1]):
        total += p
        if u < total:
            return i
    return len(probs) - 1
