"""[env] Environments in child processes, with a timeout on every call: env -> agent loop, across a process.

`EnvProcess`: one env instance in a child (`python -m envs.worker`), spoken to in JSON lines: a reset reply
carries the first observation and the task's tool schemas (`EnvProcess.tools`), a step reply the StepResult's
fields, checked by the child (`envs.base.check_step`). A call past its limit kills the child (EnvTimeout); a
child that dies is an EnvCrash; an exception inside the env, or a reply that fails its check, is EnvRaised.
After any failure the instance is `broken` and never used again. `EnvPool` hands out one live EnvProcess per
trajectory and replaces the broken ones. Pure Python (asyncio, the standard library and envs only).
"""

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from envs.base import Env, StepResult, Task, checked_reset, checked_step

MAX_REPLY_BYTES = 64 * 2**20  # longest reply line (one observation) the parent accepts
STDERR_TAIL_BYTES = 2000  # how much of the child's last stderr output a crash message quotes
CLOSE_GRACE_S = 2.0  # a closed child gets this long to exit on stdin EOF before it is killed
LATE_REPLY_TURNS = 8  # event-loop turns a late call still gets, to read a reply that came in while the loop was held
STDERR_DRAIN_S = 1.0  # how long an exited child's stderr may stay open (held by a grandchild) before we stop reading


class EnvFailure(Exception):
    """A call to an env process failed; the instance is broken and must be replaced."""


class EnvRaised(EnvFailure):
    """The env raised inside its process; the message starts with the env's own "Type: message"."""


class EnvCrash(EnvFailure):
    """The env process died: the message gives its exit code or signal and the tail of its stderr."""


class EnvTimeout(EnvFailure):
    """A call did not answer within its limit; the env process was killed."""


class EnvProcess:
    """One env instance in a child process. One trajectory at a time: calls must not overlap.

    Lifecycle: `await EnvProcess.start(...)`, then per trajectory `make(...)`, `await reset(task)`,
    `await step(action)`...; finally `await close()`. The child's stderr is passed through to ours.
    `tools`: the OpenAI-style tool schemas of the task the last reset started ([] for an env without tools).
    """

    def __init__(self, process: asyncio.subprocess.Process, *, step_timeout_s: float, reset_timeout_s: float):
        self._process = process
        self.step_timeout_s, self.reset_timeout_s = step_timeout_s, reset_timeout_s
        self.broken = False
        self.tools: list[dict] = []
        self._spec: dict | None = None
        self._stderr_tail = b""
        self._stderr_reader = asyncio.create_task(self._pass_stderr())

    @classmethod
    async def start(cls, *, step_timeout_s: float = 30.0, reset_timeout_s: float = 120.0) -> "EnvProcess":
        """Start a child: an exec'd interpreter (never a fork of this, possibly threaded, process), in a process
        group of its own so that killing it also kills what the env started (a JVM, a game server)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "envs.worker",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_environ(),
            limit=MAX_REPLY_BYTES,
            start_new_session=True,
        )
        return cls(process, step_timeout_s=step_timeout_s, reset_timeout_s=reset_timeout_s)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exited(self) -> bool:
        return self._process.returncode is not None

    def make(self, name: str, seed: int = 0, options: dict | None = None) -> None:
        """Choose the env the next reset plays, as `envs.make_env(name, seed=seed, **options)`.

        It is built in the child by that reset (under reset_timeout_s), and kept for later trajectories that
        ask for the same name, seed and options; a kept env goes on with its own random stream.
        """
        options = dict(options or {})
        try:
            json.dumps(options)
        except (TypeError, ValueError) as error:
            raise TypeError(f"env options for {name!r} must be JSON values: {error}") from None
        self._spec = {"name": name, "seed": seed, "options": options}

    async def reset(self, task: Task) -> str:
        if self._spec is None:
            raise RuntimeError("EnvProcess.reset before make(name, seed, options)")
        self.tools = []
        request = {"call": "reset", "env": self._spec, "task": dataclasses.asdict(task)}
        reply = await self._call(request, self.reset_timeout_s, "reset")
        self.tools = reply["tools"]
        return reply["observation"]

    async def step(self, action: str) -> StepResult:
        return StepResult(**await self._call({"call": "step", "action": action}, self.step_timeout_s, "step"))

    async def close(self) -> None:
        """Ask the child to exit (EOF on its stdin); kill it if it has not within CLOSE_GRACE_S."""
        self.broken = True
        if not self.exited:
            self._process.stdin.close()
            try:
                await asyncio.wait_for(self._process.wait(), CLOSE_GRACE_S)
            except TimeoutError:
                await self._kill()
        await self._stderr_done()

    async def _call(self, request: dict, timeout_s: float, what: str) -> dict:
        if self.broken:
            raise EnvFailure(f"env process {self.pid} is broken by an earlier failure; take a fresh one")
        # Broken until a whole reply is in: a call cut short (timeout, cancellation, garbage) leaves the
        # request/reply stream out of step.
        self.broken = True
        exchange = asyncio.ensure_future(self._exchange(request, what))
        try:
            await asyncio.wait({exchange}, timeout=timeout_s)
            # The limit is on the env, not on this event loop. A long engine step holds the loop (it runs in it),
            # and a reply that came in meanwhile still needs a few turns of the loop to be read: it gets them.
            # An env that has not answered gets nothing from them.
            for _ in range(LATE_REPLY_TURNS):
                if exchange.done():
                    break
                await asyncio.sleep(0)
        finally:
            late = not exchange.done()
            if late:  # or this call was cancelled
                exchange.cancel()
        if late:
            await self._kill()
            raise EnvTimeout(f"env {what} did not answer within {timeout_s:g} s; its process {self.pid} was killed")
        reply = exchange.result()  # or its EnvCrash
        if "error" in reply:
            raise EnvRaised(f"{reply['error']} (raised by the env in {what})")
        self.broken = False
        return reply

    async def _exchange(self, request: dict, what: str) -> dict:
        try:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            await self._process.stdin.drain()
            line = await self._process.stdout.readline()
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        if not line:
            raise await self._crash(what)
        return json.loads(line)

    async def _crash(self, what: str) -> EnvCrash:
        """The error for a child that closed its stdout: it has died, or is killed now."""
        try:
            await asyncio.wait_for(self._process.wait(), CLOSE_GRACE_S)
        except TimeoutError:
            await self._kill()
        await self._stderr_done()  # all it said before dying
        tail = self._stderr_tail.decode(errors="replace").strip()
        return EnvCrash(
            f"env process {self.pid} died during {what} ({_exit_status(self._process.returncode)})"
            + (f"; its last output: {tail}" if tail else "")
        )

    async def _kill(self) -> None:
        """SIGKILL the child's whole process group. Until it is reaped the child's pid is its group's id."""
        if not self.exited:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group is gone already
                pass
        await self._process.wait()

    async def _stderr_done(self) -> None:
        """Let the stderr copy finish; a grandchild that keeps the pipe open must not hold us up."""
        done, _ = await asyncio.wait({self._stderr_reader}, timeout=STDERR_DRAIN_S)
        if not done:
            self._stderr_reader.cancel()

    async def _pass_stderr(self) -> None:
        """Copy the child's stderr to ours as it comes (the env's prints go there), keeping the tail."""
        while chunk := await self._process.stderr.read(4096):
            os.write(2, chunk)
            self._stderr_tail = (self._stderr_tail + chunk)[-STDERR_TAIL_BYTES:]


class EnvPool:
    """Live env processes for one rollout actor: one per trajectory in play, broken ones replaced.

    The pool grows on demand to the number of trajectories played at once, at most `max_processes` (further
    trajectories wait for a free one: suites that start a JVM per process should not start hundreds), and
    keeps the processes between them. `restarts` counts the processes thrown away after a failure (each
    replaced by a fresh one on demand).
    """

    def __init__(self, *, step_timeout_s: float = 30.0, reset_timeout_s: float = 120.0, max_processes: int = 64):
        self.step_timeout_s, self.reset_timeout_s = step_timeout_s, reset_timeout_s
        self._slots = asyncio.Semaphore(max_processes)
        self.restarts = 0
        self._idle: list[EnvProcess] = []
        self._open: set[EnvProcess] = set()  # every child started and not closed yet, idle or lent

    @asynccontextmanager
    async def env(self) -> AsyncIterator[EnvProcess]:
        """An EnvProcess for one trajectory, taken back (or replaced, if broken) when the block exits."""
        async with self._slots:
            process = await self.acquire()
            try:
                yield process
            finally:
                await self.release(process)

    def full(self) -> bool:
        """Every process slot is lent: `env()` waits until a trajectory gives one back."""
        return self._slots.locked()

    async def acquire(self) -> EnvProcess:
        while self._idle:
            process = self._idle.pop()
            if not process.exited:
                return process
            await self._discard(process)  # died while idle (e.g. the OOM killer)
        process = await EnvProcess.start(step_timeout_s=self.step_timeout_s, reset_timeout_s=self.reset_timeout_s)
        self._open.add(process)
        return process

    async def release(self, process: EnvProcess) -> None:
        if process.broken or process.exited:
            await self._discard(process)
        else:
            self._idle.append(process)

    def pids(self) -> list[int]:
        """Process ids of every open child, idle or lent."""
        return sorted(p.pid for p in self._open)

    async def close(self) -> None:
        """Close every child this pool started and has not closed yet."""
        processes, self._open, self._idle = list(self._open), set(), []
        await asyncio.gather(*(p.close() for p in processes))

    async def _discard(self, process: EnvProcess) -> None:
        self.restarts += 1
        self._open.discard(process)
        await process.close()


class InProcessEnv:
    """The EnvProcess call API over an env object in this process: no isolation, no timeouts.

    For tests and benchmarks (the baseline that EnvProcess must reproduce: the same checks, the same replies); an
    env that hangs hangs the caller. A reply that fails its check raises ValueError.
    """

    def __init__(self, env: Env):
        self.env = env
        self.tools: list[dict] = []

    async def reset(self, task: Task) -> str:
        self.tools = []
        observation, self.tools = checked_reset(self.env, task)
        return observation

    async def step(self, action: str) -> StepResult:
        return checked_step(self.env, action)


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _child_environ() -> dict[str, str]:
    """Our environment, with this checkout first on PYTHONPATH so that the child imports the same envs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
