"""Config: the root run config (four sections), its loader, its checks and its TOML writer.

A run is resolved as dataclass defaults < TOML file < `dotted.key=value` overrides by `load()`, and
checked by `check()`, which holds every cross-field rule. `dump()` writes the resolved config as TOML;
loading that text gives back an equal Config. Derived values are functions (`tasks_per_iteration`).
"""

import dataclasses
import re
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import envs
from actors.config import ActorConfig
from cluster.trackers import TRACKERS
from envs.config import EnvConfig
from learner.config import LearnerConfig


class ConfigError(ValueError):
    """A config file, override or value the run cannot use; the message names the dotted key."""


@dataclass(frozen=True)
class ClusterConfig:
    address: str = ""
    """Ray cluster to run on. "" starts an embedded local cluster (everything on loopback, dashboard on
    127.0.0.1:dashboard_port); "auto" joins the cluster this process runs in (what `ray job submit`
    gives); anything else is a Ray address. The default needs no cluster set up beforehand."""
    num_cpus: int = 0
    """Logical CPUs of the embedded cluster; 0 = this machine's cores. Unused when joining a cluster."""
    dashboard_port: int = 8265
    """Ray dashboard port of the embedded cluster (Ray's own default)."""
    metrics_export_port: int = 8080
    """Prometheus endpoint port of the embedded cluster, where the Ray metric gauges are scraped."""
    run_dir: str = ""
    """Where the run writes config.toml, metrics.jsonl, trajectories/ and policy/;
    "" = runs/<YYYYmmdd-HHMMSS>, a fresh directory, so a run never overwrites another."""
    colocate_scorer: bool = False
    """Place the scorer on learner rank 0's bundle (each takes half its CPUs and GPUs) instead of a bundle of
    its own: one GPU fewer, since scoring and updating never run at the same time."""
    save_every: int = 0
    """Iterations between checkpoints in checkpoints/ (learner and scorer state with optimizers, iteration,
    policy version), which `--resume` continues from; 0 = none. policy/ is always written at the end."""
    keep_checkpoints: int = 2
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    timeout_s: float = 900.0
    """Seconds any one role call may take before the run fails with an error naming the role; no wait
    is unbounded. 900 s leaves room for a slow first iteration (engine start-up)."""
    trackers: list[str] = field(default_factory=list)
    """Experiment trackers that receive every metric of metrics.jsonl, the iteration as the step, and the
    config as hyperparameters: any of "tensorboard", "mlflow", "wandb", each the pip extra of the same name
    (cluster/trackers.py). On the command line: cluster.trackers=tensorboard,mlflow."""
    eval_every: int = 0
    """Iterations between evaluations of the current policy on the env's eval split, and one after the last;
    0 = none. The rollout actors play it beside the next iteration's rollouts (evals/, eval/* metrics)."""
    eval_num_tasks: int = 0
    """Tasks of the eval split each evaluation plays, the first ones, one trajectory each; 0 = all of them."""


@dataclass(frozen=True)
class Config:
    num_iterations: int = 10
    """Iterations to run, each one collect -> score -> update -> broadcast."""
    seed: int = 0
    """Seed of the task order, sampling and random model weights."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment the rollout actors play (envs/config.py)."""
    actors: ActorConfig = field(default_factory=ActorConfig)
    """Rollout actors, their engine and the agent loop (actors/config.py)."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """Policy model, scorer, advantage and update (learner/config.py)."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Ray cluster, run directory, checkpoints and timeouts (this file)."""


def tasks_per_iteration(cfg: Config) -> int:
    """Tasks one iteration plays: each task is played group_size times to fill the batch."""
    return cfg.learner.batch_size // cfg.learner.group_size


# --- load ---


def load(path: str | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults < the TOML file at `path` (None: no file) < `dotted.key=value` overrides; then check()."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'dotted.key=value' strings, not one string")
    data = _read(path) if path is not None else {}
    _build(Config, data, "", f" (in {path})")  # report file errors against the file, before merging
    for item in overrides:
        _apply_override(data, item)
    cfg = _build(Config, data, "", "")
    check(cfg)
    return cfg


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def _build(cls: type, data: dict[str, Any], prefix: str, where: str) -> Any:
    """An instance of dataclass `cls` from a TOML table, every key and type checked."""
    types = _field_types(cls)
    values = {}
    for name, value in data.items():
        key = prefix + name
        if name not in types:
            raise _unknown_key(key, cls, prefix, where)
        tp = types[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table [{key}], got {value!r}{where}")
            values[name] = _build(tp, value, key + ".", where)
        elif _is_a(tp, value):
            values[name] = float(value) if tp is float else value
        else:
            raise _wrong_type(key, tp, value, where)
    return cls(**values)


def _apply_override(data: dict[str, Any], item: str) -> None:
    """Parse one `dotted.key=value` by the field's type and set it in the nested TOML-like dict."""
    key, sep, text = item.partition("=")
    key = key.strip()
    where = f" (in override {item!r})"
    if not sep:
        raise ConfigError(f"override {item!r} has no '='; expected section.key=value, e.g. learner.lr=1e-6")
    path = key.split(".")
    cls, node = Config, data
    for i, name in enumerate(path):
        types = _field_types(cls)
        prefix = ".".join(path[:i]) + "." if i else ""
        if name not in types:
            raise _unknown_key(prefix + name, cls, prefix, where)
        tp = types[name]
        last = i == len(path) - 1
        if dataclasses.is_dataclass(tp):
            if last:
                first = dataclasses.fields(tp)[0].name
                raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.{first}=VALUE{where}")
            node, cls = node.setdefault(name, {}), tp
        elif typing.get_origin(tp) is dict and i == len(path) - 2:  # one option of a table of options
            node.setdefault(name, {})[path[-1]] = _parse_option(text)
            return
        elif not last:
            raise ConfigError(f"unknown key {key}: {prefix + name} is a {_type_name(tp)}, not a section{where}")
        else:
            value = _parse(tp, text)
            if not _is_a(tp, value):
                raise _wrong_type(key, tp, value, where)
            node[name] = value


def _parse(tp: Any, text: str) -> Any:
    """The override text as a value of type tp, or the text itself when it does not parse."""
    try:
        if tp is bool:
            return {"true": True, "false": False}.get(text, text)
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
    except ValueError:
        pass
    if typing.get_origin(tp) is list:
        return _parse_list(text)
    return text  # str and Literal fields take the text as is


def _parse_list(text: str) -> list | str:
    """A list override: a TOML array (["a", "b"]) or comma-separated words (a,b); "" is the empty list."""
    if text.strip().startswith("["):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return text
    return [word.strip() for word in text.split(",") if word.strip()]


def _parse_option(text: str) -> str | int | float | bool:
    """An option's override text read as a TOML value (3, 0.5, true, "x"), else as the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# --- types ---


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_a(tp: Any, value: Any) -> bool:
    """Whether value has field type tp. bool is not an int here, though Python makes it a subclass;
    an int is a float."""
    if typing.get_origin(tp) is Literal:
        return any(type(value) is type(c) and value == c for c in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_is_a(item, v) for v in value)
    if typing.get_origin(tp) is dict:  # a table of options: plain values only
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
        )
    if isinstance(value, bool):
        return tp is bool
    if tp is float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if tp is bool:
        return "bool (true or false)"
    if typing.get_origin(tp) is dict:
        return "a table of option = string, number or bool"
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return tp.__name__


def _wrong_type(key: str, tp: Any, value: Any, where: str) -> ConfigError:
    return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}{where}")


def _unknown_key(key: str, cls: type, prefix: str, where: str) -> ConfigError:
    scope = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
    valid = ", ".join(f.name for f in dataclasses.fields(cls))
    return ConfigError(f"unknown key {key}{where}; valid keys in {scope}: {valid}")


# --- check ---


def check(cfg: Config) -> None:
    """Every cross-field rule. Raises ConfigError listing all violations; never changes a value."""
    _check_types(cfg, "")
    env, actors, learner, cluster = cfg.env, cfg.actors, cfg.learner, cfg.cluster
    errors: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:  # written as `not (x > 0)` so that NaN fails too
            errors.append(message)

    need(cfg.num_iterations >= 1, f"num_iterations ({cfg.num_iterations}) must be at least 1")
    need(not (problem := _env_problem(env.name)), f"env.name: {problem}")
    need(env.max_steps >= 1, f"env.max_steps ({env.max_steps}) must be at least 1")
    need(env.max_env_processes >= 1, f"env.max_env_processes ({env.max_env_processes}) must be at least 1")
    for key, value in [("env.step_timeout_s", env.step_timeout_s), ("env.reset_timeout_s", env.reset_timeout_s)]:
        need(value > 0, f"{key} ({value}) must be > 0: every env call is bounded")
    need(actors.tensor_parallel_size >= 1, f"actors.tensor_parallel_size ({actors.tensor_parallel_size}) must be >= 1")
    need(actors.num_rollout_actors >= 1, f"actors.num_rollout_actors ({actors.num_rollout_actors}) must be at least 1")
    need(actors.temperature > 0, f"actors.temperature ({actors.temperature}) must be > 0")
    need(actors.max_tokens >= 1, f"actors.max_tokens ({actors.max_tokens}) must be at least 1")
    need(
        actors.max_trajectory_tokens > actors.max_tokens,
        f"actors.max_trajectory_tokens ({actors.max_trajectory_tokens}) must be greater than "
        f"actors.max_tokens ({actors.max_tokens}): a trajectory holds the prompt and at least one action",
    )
    need(actors.kv_cache_gb > 0, f"actors.kv_cache_gb ({actors.kv_cache_gb}) must be > 0")
    need(
        actors.tensor_parallel_size == 1 or actors.num_gpus == actors.tensor_parallel_size,
        f"actors.tensor_parallel_size ({actors.tensor_parallel_size}) > 1 needs as many GPUs per rollout actor: "
        f"set actors.num_gpus = {actors.tensor_parallel_size} (it is {actors.num_gpus})",
    )
    need(actors.engine_timeout_s > 0, f"actors.engine_timeout_s ({actors.engine_timeout_s}) must be > 0")
    need(learner.num_learners >= 1, f"learner.num_learners ({learner.num_learners}) must be at least 1")
    need(learner.zero_stage in (0, 1, 2, 3), f"learner.zero_stage ({learner.zero_stage}) must be 0, 1, 2 or 3")
    need(
        learner.group_size >= 2,
        f"learner.group_size ({learner.group_size}) must be at least 2: a group of one has no baseline",
    )
    need(learner.batch_size >= 1, f"learner.batch_size ({learner.batch_size}) must be at least 1")
    if learner.group_size >= 1:
        need(
            learner.batch_size % learner.group_size == 0,
            f"learner.batch_size ({learner.batch_size}) must be a multiple of "
            f"learner.group_size ({learner.group_size})",
        )
        need(
            env.num_tasks >= tasks_per_iteration(cfg),
            f"env.num_tasks ({env.num_tasks}) must be at least the tasks per iteration, "
            f"learner.batch_size / learner.group_size ({tasks_per_iteration(cfg)})",
        )
    if learner.num_learners >= 1:
        need(
            learner.batch_size % learner.num_learners == 0,
            f"learner.batch_size ({learner.batch_size}) must be a multiple of learner.num_learners "
            f"({learner.num_learners})",
        )
    need(
        learner.microbatch_tokens >= 1,
        f"learner.microbatch_tokens ({learner.microbatch_tokens}) must be at least 1 (a token budget per microbatch)",
    )
    need(learner.lr > 0, f"learner.lr ({learner.lr}) must be > 0")
    need(learner.kl_coef >= 0, f"learner.kl_coef ({learner.kl_coef}) must be >= 0")
    need(learner.max_staleness >= 0, f"learner.max_staleness ({learner.max_staleness}) must be >= 0 (0 = on-policy)")
    need(
        learner.max_importance_ratio >= 1.0,
        f"learner.max_importance_ratio ({learner.max_importance_ratio}) must be >= 1: it truncates "
        "pi_theta / pi_behavior, which is 1 on-policy",
    )
    need(learner.beta > 0, f"learner.beta ({learner.beta}) must be > 0")
    need(
        learner.scorer != "frozen" or bool(learner.scorer_policy),
        'learner.scorer = "frozen" needs learner.scorer_policy (the numerator model directory)',
    )
    need(learner.scorer_lag >= 1, f"learner.scorer_lag ({learner.scorer_lag}) must be >= 1")
    need(learner.logp_chunk_size >= 1, f"learner.logp_chunk_size ({learner.logp_chunk_size}) must be at least 1")
    for key, value in [
        ("actors.num_cpus", actors.num_cpus),
        ("actors.num_gpus", actors.num_gpus),
        ("learner.num_cpus", learner.num_cpus),
        ("learner.num_gpus", learner.num_gpus),
        ("cluster.num_cpus", cluster.num_cpus),
    ]:
        need(value >= 0, f"{key} ({value}) must be >= 0")
    for key, port in [
        ("cluster.dashboard_port", cluster.dashboard_port),
        ("cluster.metrics_export_port", cluster.metrics_export_port),
    ]:
        need(1 <= port <= 65535, f"{key} ({port}) must be in 1..65535")
    need(
        cluster.address != "" or cluster.dashboard_port != cluster.metrics_export_port,
        f"cluster.dashboard_port and cluster.metrics_export_port ({cluster.dashboard_port}) must differ",
    )
    need(cluster.save_every >= 0, f"cluster.save_every ({cluster.save_every}) must be >= 0 (0 = no checkpoints)")
    need(cluster.keep_checkpoints >= 1, f"cluster.keep_checkpoints ({cluster.keep_checkpoints}) must be >= 1")
    need(cluster.timeout_s > 0, f"cluster.timeout_s ({cluster.timeout_s}) must be > 0: every wait is bounded")
    unknown = [name for name in cluster.trackers if name not in TRACKERS]
    need(not unknown, f"cluster.trackers ({cluster.trackers}): {unknown} unknown; trackers are {', '.join(TRACKERS)}")
    need(
        len(set(cluster.trackers)) == len(cluster.trackers),
        f"cluster.trackers ({cluster.trackers}) names a tracker twice",
    )
    need(cluster.eval_every >= 0, f"cluster.eval_every ({cluster.eval_every}) must be >= 0 (0 = no evaluation)")
    need(
        cluster.eval_num_tasks >= 0,
        f"cluster.eval_num_tasks ({cluster.eval_num_tasks}) must be >= 0 (0 = the whole eval split)",
    )
    need(
        learner.lr_warmup_iterations >= 0, f"learner.lr_warmup_iterations ({learner.lr_warmup_iterations}) must be >= 0"
    )
    need(
        0.0 <= learner.lr_min_ratio <= 1.0,
        f"learner.lr_min_ratio ({learner.lr_min_ratio}) must be in [0, 1]: the decayed rate as a share of learner.lr",
    )
    if errors:
        raise ConfigError("\n".join(errors))


def _env_problem(name: str) -> str | None:
    """Why env `name` cannot be made (its module does not import, a protocol method is missing, an unknown name),
    or None. Resolving imports the env's module, not the suite it adapts."""
    try:
        envs.resolve_env(name)
    except envs.EnvSpecError as error:
        return str(error)
    return None


def _check_types(obj: Any, prefix: str) -> None:
    """Types of a Config built in code (load() has checked them already)."""
    for name, tp in _field_types(type(obj)).items():
        key, value = prefix + name, getattr(obj, name)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
            _check_types(value, key + ".")
        elif not _is_a(tp, value):
            raise _wrong_type(key, tp, value, "")


# --- dump ---


def dump(cfg: Config) -> str:
    """The resolved config as TOML: top-level keys, then one table per section. load() reads it back equal."""
    top, tables = [], []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            tables.append(f"\n[{f.name}]")
            tables += [f"{g.name} = {_toml_value(getattr(value, g.name))}" for g in dataclasses.fields(value)]
        else:
            top.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(top + tables) + "\n"


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)  # shortest text that parses back to the same float; inf/nan are TOML too
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        chars = (_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value)
        return '"' + "".join(chars) + '"'
    raise TypeError(f"cannot write {value!r} as TOML")
