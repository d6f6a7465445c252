"""`freelunch env`: list the env names and check an env against the protocol before a run uses it.

    freelunch env list
    freelunch env check NAME [--episodes N] [seed=S env.KEY=VALUE ...]

`check` builds the env as `freelunch train` would with the same `env.*` settings (max_steps, num_tasks, options,
timeouts) and runs envs/check.py's checks; it prints one line per check and exits 1 naming the first violation
(a name that does not resolve is one: a module that does not import, a class without a protocol method), 2 for
bad arguments.
"""

import argparse
import sys

import envs
from cluster.config import ConfigError, load
from envs.check import EnvCheckFailed, check_env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="env_command", required=True)
    commands.add_parser("list", help="the built-in and registered env names")
    check = commands.add_parser("check", help="check an env against the env protocol (exit 1 on a violation)")
    check.add_argument("name", help="a built-in name, a registered name or module:Class")
    check.add_argument("--episodes", type=int, default=8, help="episodes to play and replay (default 8)")
    check.add_argument("overrides", nargs="*", metavar="key=value", help="seed and env.* settings, as for train")


def run_env(args: argparse.Namespace) -> int:
    if args.env_command == "list":
        print("\n".join(envs.available()))
        print("module:Class  (your own env class, importable from PYTHONPATH)")
        return 0
    try:
        cfg = plan(args)
    except (ConfigError, ValueError) as error:
        print(f"freelunch: {error}", file=sys.stderr)
        return 2
    env, name = cfg.env, args.name
    print(f"freelunch: checking env {name} (seed {cfg.seed}, max_steps {env.max_steps})", flush=True)
    try:
        check_env(
            name,
            seed=cfg.seed,
            max_steps=env.max_steps,
            num_tasks=env.num_tasks,
            options=env.options,
            episodes=args.episodes,
            step_timeout_s=env.step_timeout_s,
            reset_timeout_s=env.reset_timeout_s,
            report=lambda line: print(line, flush=True),
        )
    except EnvCheckFailed as failure:
        print(f"FAIL {failure}", flush=True)
        print(f"freelunch: env {name} violates the env protocol ({failure.check})", file=sys.stderr)
        return 1
    print(f"freelunch: env {name} passed every check", flush=True)
    return 0


def plan(args: argparse.Namespace):
    """The config whose env.* settings the check uses (seed and env.* only). The name is not part of it: a name
    that does not resolve is the check's first violation (`make`), not a bad argument."""
    for item in args.overrides:
        key = item.partition("=")[0].strip()
        if key == "env.name":
            raise ValueError("give the env as NAME, not env.name=")
        if key != "seed" and not key.startswith("env."):
            raise ValueError(f"env check takes seed and env.* settings; {item!r} is not one of them")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {args.episodes}")
    return load(None, args.overrides)
