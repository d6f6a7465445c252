"""[env] What the third-party suite adapters share: extra and Java checks, action matching, score -> reward.

Each adapter (textworld_express.py, scienceworld.py, textworld.py, textarena.py) turns a suite's game into
the `Env` protocol: the reward of a step is the increase of the suite's normalised score, so a trajectory's
outcome (the sum of its rewards) is its final score in [0, 1].
"""

import importlib
import re
import shutil
import subprocess
from types import ModuleType

JAVA_MAJOR = 17


def require(module: str, extra: str) -> ModuleType:
    """Import a suite's module, or fail with the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the {extra} environments need the {extra} extra: pip install 'freelunch[{extra}]' ({error})"
        ) from error


def require_java(suite: str) -> None:
    """Fail unless a `java` is on PATH (the suite runs in a JVM)."""
    if shutil.which("java") is None:
        raise RuntimeError(
            f"{suite} runs in a JVM and needs Java {JAVA_MAJOR} on PATH (`java` not found); "
            f"install it, e.g. apt-get install openjdk-{JAVA_MAJOR}-jre-headless"
        )


def check_java_version(suite: str) -> None:
    """Fail unless `java -version` reports at least JAVA_MAJOR (one subprocess: call once per JVM start)."""
    require_java(suite)
    text = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    major = int(match.group(1)) if match else 0
    if major == 1 and match.group(2):  # "1.8.0" is Java 8
        major = int(match.group(2))
    if major < JAVA_MAJOR:
        raise RuntimeError(f"{suite} needs Java {JAVA_MAJOR} or newer; `java -version` says: {text.strip()[:200]}")


def match_action(action: str, valid_actions: list[str]) -> str:
    """The policy's action as the suite should read it: a valid action if it names exactly one, else its text.

    Lenient on the wrapping a small model adds: the first non-empty line, case, quotes, a trailing period.
    """
    line = next((part.strip() for part in action.splitlines() if part.strip()), "")
    text = line.strip("`'\"").rstrip(".!").strip()
    by_lower = {valid.lower(): valid for valid in valid_actions}
    return by_lower.get(text.lower(), text)


def with_actions(text: str, valid_actions: list[str], list_actions: bool) -> str:
    """The observation, followed by the valid actions when the adapter lists them."""
    if not list_actions or not valid_actions:
        return text.strip()
    return f"{text.strip()}\nValid actions: {', '.join(valid_actions)}."


class Progress:
    """Steps taken and the score so far of one trajectory; turns score updates into rewards."""

    def __init__(self, max_steps: int):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self.steps = 0
        self.score = 0.0

    def advance(self, score: float) -> tuple[float, bool]:
        """Count one step at the suite's new normalised score; returns (reward, out_of_steps).

        The score is clamped to [0, 1] (a suite's failure score becomes 0), so the rewards sum to the final score.
        """
        self.steps += 1
        score = min(max(score, 0.0), 1.0)
        reward, self.score = score - self.score, score
        return reward, self.steps >= self.max_steps
