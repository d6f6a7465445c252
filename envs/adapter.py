"""[env] What the third-party suite adapters share: extra and Java checks, action matching, score -> reward.

Each adapter (textworld_express.py, scienceworld.py, textworld.py, textarena.py) turns a suite's game into
the `Env` protocol: the reward of a step is the increase of the suite's normalised score, so a trajectory's
outcome (the sum of its rewards) is its final score in [0, 1].
"""

import atexit
import importlib
import re
import shutil
import subprocess
import unicodedata
from types import ModuleType

JAVA_MAJOR = 17
# No suite parses a command this long; an LLM can emit one (a loop of tokens) and some parsers slow down with it.
MAX_ACTION_CHARS = 500
LISTED, ASK = "Valid actions: ", ". Answer with one of them."  # how observations list the valid actions


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


def keep_for_process(jvm_env):
    """Keep a suite's JVM-owning env object for the life of the process and close it cleanly at exit.

    The suites' env classes shut their JVM down in __del__, which at interpreter exit runs after logging is
    torn down and prints a traceback; closing it from atexit first, and making the later call a no-op, does not.
    """

    def close() -> None:
        jvm_env.close()
        jvm_env.close = lambda: None

    atexit.register(close)
    return jvm_env


def sanitised(action: str, max_chars: int = MAX_ACTION_CHARS) -> str:
    """The action as a suite's command parser may be given it, whatever bytes the policy emitted.

    Control and format characters and every kind of space become a space (a NUL spins the Z-machine at 100% CPU),
    and runs of spaces become one; line and paragraph separators become newlines. Lone surrogates (what bytes that
    are not UTF-8 decode to with surrogateescape), unassigned code points and U+FFFD (what they decode to with
    replace) are dropped. The result is cut to max_chars characters."""
    kept = []
    for char in action[: 4 * max_chars]:  # bounds the work on a huge action, with room for what is dropped
        category = unicodedata.category(char)
        if char == "\n" or category in ("Zl", "Zp"):
            kept.append("\n")
        elif category in ("Cc", "Cf", "Zs"):
            kept.append(" ")
        elif category[0] != "C" and char != "\ufffd":
            kept.append(char)
    return re.sub(" {2,}", " ", "".join(kept))[:max_chars]


def match_action(action: str, valid_actions: list[str]) -> str:
    """The policy's action as the suite should read it (`sanitised`): the valid action it names, else its first line.

    Lenient with what a small model wraps an action in: case, quotes and a trailing period are ignored, and a
    sentence that names valid actions ("I will move east.") counts as the first one it names (the longest at
    that place: "look around" over "look"), as the corridor reads a door.
    """
    action = sanitised(action)
    line = next((part.strip() for part in action.splitlines() if part.strip()), "")
    text = line.strip("`'\"").rstrip(".!").strip()
    by_lower = {valid.lower(): valid for valid in valid_actions}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    named = [
        (match.start(), -len(valid), valid)
        for valid in valid_actions
        if (match := re.search(rf"\b{re.escape(valid.lower())}\b", action.lower()))
    ]
    return min(named)[2] if named else text


def with_actions(text: str, valid_actions: list[str], list_actions: bool) -> str:
    """The observation, followed by the valid actions when the adapter lists them, each once (TextWorldExpress
    lists "eat papaya" twice when two papayas are in reach), in the suite's order."""
    if not list_actions or not valid_actions:
        return text.strip()
    return f"{text.strip()}\n{LISTED}{', '.join(dict.fromkeys(valid_actions))}{ASK}"


def listed_actions(observation: str) -> list[str]:
    """The valid actions `with_actions` listed in an observation ([] if none), for scripted policies."""
    _, listed, rest = observation.rpartition(LISTED)
    return rest.removesuffix(ASK).split(", ") if listed and rest.endswith(ASK) else []


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
