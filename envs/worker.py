"""[env] The child side of envs.process.EnvProcess: one env instance served as JSON lines over stdin/stdout.

    python -m envs.worker PARENT_PID        (started by EnvProcess, not by hand)

One request per line, one reply per line, in order. `reset` makes the env (or keeps the current one when
name, seed and options are unchanged) and resets it: {"observation", "tools"} (the task's tool schemas, [] for an
env without tools); `step` steps it: the StepResult's fields {"observation", "reward", "done", "info", "success",
"role"}. Every reply is checked first (`envs.base.check_reset` / `check_step`: reward a finite number, done a
bool, role user or tool, ...). An exception in the env, or a reply that fails its check, is a reply
{"error": "Type: message"} naming the field, not an exit. The child exits on stdin EOF or when PARENT_PID stops
being its parent, so it never outlives the process that started it, even while the env hangs.
"""

import dataclasses
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from typing import IO

from envs import make_env
from envs.base import Env, Task, checked_reset, checked_step


def main() -> None:
    parent = int(sys.argv[1])
    # The protocol gets its own copy of fd 1; fd 1 and sys.stdout then point at stderr, so whatever the env
    # prints, from Python or from native code (a JVM, a C extension), cannot corrupt a reply.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    faulthandler.enable(all_threads=False)  # a segfault leaves a traceback on stderr, quoted by the parent
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    serve(sys.stdin, replies)


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer requests until EOF. Each request is one JSON object with "call" = "reset" | "step"."""
    env: Env | None = None
    spec: dict | None = None
    for line in requests:
        request = json.loads(line)
        try:
            if request["call"] == "reset":
                if request["env"] != spec:
                    env = spec = None  # a failed make leaves no env behind
                    env = make_env(request["env"]["name"], seed=request["env"]["seed"], **request["env"]["options"])
                    spec = request["env"]
                observation, tools = checked_reset(env, Task(**request["task"]))
                reply = {"observation": observation, "tools": tools}
            elif env is None:
                raise RuntimeError("step before a successful reset")
            else:
                reply = dataclasses.asdict(checked_step(env, request["action"]))
            text = json.dumps(reply)
        except Exception as error:
            text = json.dumps({"error": f"{type(error).__name__}: {error}"})
        replies.write(text + "\n")
        replies.flush()


def _exit_when_orphaned(parent: int) -> None:
    """Exit once the parent is gone (we are re-parented), whatever the main thread is stuck in, and take down what
    the env started (a JVM): the process group this worker leads."""
    while os.getppid() == parent:
        time.sleep(1.0)
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


if __name__ == "__main__":
    main()
