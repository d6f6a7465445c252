"""[env] Corridor: the quickstart environment of `freelunch train`.

A corridor of rooms; in each room one door, said to be open, leads on. Taking it moves the agent
forward only with probability 1 - slip (the floor is icy: a stochastic transition); any other door
keeps it in place. Each room passed gives reward 1 / num_rooms, so the outcome (their sum) is the share
of the corridor crossed within `max_steps`: 1.0 exactly when the agent reached the exit.
A policy that takes the open door succeeds far more often than one that guesses, so outcome-driven RL
shows visible progress within a few iterations on a 135M model.
"""

import random
import re

from envs.base import StepResult, Task
from envs.tasks import split_tasks

COLORS = ("red", "blue", "green", "yellow", "white", "black")


class Corridor:
    def __init__(
        self,
        seed: int = 0,
        num_rooms: int = 2,
        num_doors: int = 2,
        slip: float = 0.2,
        max_steps: int = 4,
        num_tasks: int = 512,
    ):
        if not 2 <= num_doors <= len(COLORS):
            raise ValueError(f"corridor: num_doors must be in 2..{len(COLORS)}, got {num_doors}")
        if not 0.0 <= slip < 1.0:
            raise ValueError(f"corridor: slip must be in [0, 1), got {slip}")
        self.num_rooms, self.num_doors, self.slip = num_rooms, num_doors, slip
        self.max_steps, self.num_tasks = max_steps, num_tasks
        self._luck = random.Random(seed)  # transition noise; the layout comes from the task seed
        self._rooms: list[tuple[list[str], str]] = []
        self._room = self._steps = 0

    def tasks(self, split: str) -> list[Task]:
        return split_tasks("corridor", split, self.num_tasks)

    def reset(self, task: Task) -> str:
        layout = random.Random(task.seed)
        self._rooms = []
        for _ in range(self.num_rooms):
            doors = layout.sample(COLORS, self.num_doors)
            self._rooms.append((doors, layout.choice(doors)))
        self._room = self._steps = 0
        return f"Find the exit of a corridor of {self.num_rooms} rooms.\n{self._describe()}"

    def step(self, action: str) -> StepResult:
        self._steps += 1
        doors, open_door = self._rooms[self._room]
        chosen = _first_door(action, doors)
        if chosen is None:
            text = f"That is not a door here. Answer with one of: {', '.join(doors)}."
        elif chosen != open_door:
            text = f"The {chosen} door is locked. You stay in room {self._room + 1}."
        elif self._luck.random() < self.slip:
            text = f"The floor is icy: you slip back into room {self._room + 1}."
        else:
            self._room += 1
            if self._room == self.num_rooms:
                return StepResult("You reach the exit. Well done!", 1.0 / self.num_rooms, True, success=True)
            return self._next(f"You walk through the {chosen} door.", 1.0 / self.num_rooms)
        return self._next(text, 0.0)

    def _next(self, text: str, reward: float) -> StepResult:
        if self._steps >= self.max_steps:
            return StepResult(text + " Time is up.", reward, True, success=False)
        return StepResult(f"{text}\n{self._describe()}", reward, False)

    def _describe(self) -> str:
        doors, open_door = self._rooms[self._room]
        return (
            f"Room {self._room + 1}. Doors: {', '.join(doors)}. The {open_door} door is open. "
            "Which door do you take? Answer with one color."
        )


def _first_door(action: str, doors: list[str]) -> str | None:
    """The first door color named in the action (case-insensitive, whole words), or None."""
    match = re.search(r"\b(" + "|".join(doors) + r")\b", action.lower())
    return match.group(1) if match else None
