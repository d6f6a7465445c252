import dataclasses
import math
import re
import tomllib
from pathlib import Path

import pytest

from actors.config import ActorConfig
from cluster.config import ClusterConfig, Config, ConfigError, check, dump, load, tasks_per_iteration
from envs.config import EnvConfig
from learner.config import LearnerConfig

SMOKE = Path(__file__).resolve().parents[2] / "cluster" / "configs" / "cpu_smoke.toml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def replace(cfg: Config | None = None, **sections: dict) -> Config:
    """cfg (default: the defaults) with top-level fields (scalars) or section fields (dicts) replaced."""
    cfg = cfg or Config()
    changes = {}
    for name, value in sections.items():
        changes[name] = dataclasses.replace(getattr(cfg, name), **value) if isinstance(value, dict) else value
    return dataclasses.replace(cfg, **changes)


# --- load ---


def test_no_file_no_overrides_gives_defaults():
    assert load(None) == Config()


def test_precedence_defaults_file_overrides(tmp_path):
    path = write(tmp_path, "seed = 3\n[learner]\nlr = 1e-4\nmax_importance_ratio = 3.0\n")
    cfg = load(path, ["learner.lr=5e-6"])
    assert cfg.learner.lr == 5e-6  # override beats file
    assert cfg.learner.max_importance_ratio == 3.0  # file beats default
    assert cfg.seed == 3
    assert cfg.learner.kl_coef == LearnerConfig().kl_coef  # default where nothing is set


def test_later_override_wins():
    assert load(None, ["seed=1", "seed=2"]).seed == 2


def test_top_level_override_sets_config_field():
    cfg = load(None, ["num_iterations=3", "cluster.address=auto", "actors.dtype=float32"])
    assert (cfg.num_iterations, cfg.cluster.address, cfg.actors.dtype) == (3, "auto", "float32")


def test_unknown_override_key_is_rejected():
    with pytest.raises(ConfigError) as e:
        load(None, ["learner.lrr=1e-6"])
    assert "learner.lrr" in str(e.value)
    assert "valid keys in [learner]" in str(e.value) and "kl_coef" in str(e.value)


def test_unknown_file_key_names_dotted_key_file_and_valid_keys(tmp_path):
    path = write(tmp_path, "[cluster]\nadress = 'auto'\n")
    with pytest.raises(ConfigError) as e:
        load(path)
    message = str(e.value)
    assert "cluster.adress" in message and path in message
    assert "valid keys in [cluster]: address, num_cpus" in message


def test_unknown_section_is_rejected_with_top_level_keys(tmp_path):
    valid = "valid keys in the top level: num_iterations, seed, env"
    with pytest.raises(ConfigError, match=rf"unknown key trainer.*{valid}"):
        load(write(tmp_path, "[trainer]\nlr = 1.0\n"))


def test_wrong_type_names_key_and_expected_type(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.lr: expected float, got 'fast'"):
        load(write(tmp_path, "[learner]\nlr = 'fast'\n"))


def test_override_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"learner\.lr: expected float, got 'fast'"):
        load(None, ["learner.lr=fast"])
    with pytest.raises(ConfigError, match=r"learner\.batch_size: expected int, got '8\.0'"):
        load(None, ["learner.batch_size=8.0"])


def test_int_is_accepted_for_float_and_stored_as_float(tmp_path):
    cfg = load(write(tmp_path, "[cluster]\ntimeout_s = 60\n"), ["learner.lr=1"])
    assert type(cfg.cluster.timeout_s) is float and cfg.cluster.timeout_s == 60.0
    assert type(cfg.learner.lr) is float and cfg.learner.lr == 1.0


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match=r"seed: expected int, got True"):
        load(write(tmp_path, "seed = true\n"))
    with pytest.raises(ConfigError, match=r"learner\.lr: expected float, got False"):
        load(write(tmp_path, "[learner]\nlr = false\n"))
    with pytest.raises(ConfigError, match=r"seed: expected int, got 'true'"):
        load(None, ["seed=true"])


def test_literal_override_lists_choices():
    with pytest.raises(ConfigError, match=r"actors\.dtype: expected one of 'float32', 'bfloat16', got 'fp16'"):
        load(None, ["actors.dtype=fp16"])


def test_literal_file_value_must_be_one_of_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.kl_estimator: expected one of 'k1', 'k2', 'k3', got 'k4'"):
        load(write(tmp_path, "[learner]\nkl_estimator = 'k4'\n"))


def test_section_given_as_a_value_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"learner: expected a table \[learner\], got 3"):
        load(write(tmp_path, "learner = 3\n"))


def test_override_of_a_whole_section_is_rejected():
    with pytest.raises(ConfigError, match=r"learner is a section; set one of its keys, e.g. learner.model=VALUE"):
        load(None, ["learner=x"])


def test_override_below_a_value_is_rejected():
    with pytest.raises(ConfigError, match=r"unknown key learner\.lr\.x: learner\.lr is a float, not a section"):
        load(None, ["learner.lr.x=1"])


def test_override_without_equals_shows_expected_form():
    expected = "'learner.lr' has no '='; expected section.key=value, e.g. learner.lr="
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load(None, ["learner.lr"])


def test_missing_file_names_path(tmp_path):
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=re.escape(f"config file not found: {path}")):
        load(path)


def test_invalid_toml_names_file_and_parser_message(tmp_path):
    path = write(tmp_path, "[learner\nlr = 1\n")
    with pytest.raises(ConfigError) as e:
        load(path)
    with pytest.raises(tomllib.TOMLDecodeError) as parser:
        tomllib.loads("[learner\nlr = 1\n")
    assert path in str(e.value) and str(parser.value) in str(e.value)


def test_load_runs_check(tmp_path):
    with pytest.raises(ConfigError, match=r"must be a multiple of learner\.group_size"):
        load(write(tmp_path, "[learner]\nbatch_size = 30\n"))


def test_cpu_smoke_config_loads():
    cfg = load(str(SMOKE))
    assert cfg.num_iterations == 2
    assert cfg.learner.model == "tiny-random" and cfg.learner.num_learners == 2
    assert (cfg.learner.batch_size, cfg.learner.group_size, cfg.learner.microbatch_tokens) == (8, 4, 256)
    assert cfg.actors.dtype == "float32" and cfg.actors.kv_cache_gb == 0.25


def test_cpu_smoke_config_sets_only_non_default_keys():
    data = tomllib.loads(SMOKE.read_text())
    defaults = Config()
    for name, value in data.items():
        if isinstance(value, dict):
            for key, v in value.items():
                assert getattr(getattr(defaults, name), key) != v, f"{name}.{key} repeats the default"
        else:
            assert getattr(defaults, name) != value, f"{name} repeats the default"


# --- dump ---


def test_dump_then_load_round_trips(tmp_path):
    cfg = replace(
        num_iterations=7,
        seed=-5,
        env={"num_tasks": 64, "max_steps": 3},
        actors={"dtype": "float32", "temperature": 1 / 3, "kv_cache_gb": 0.1, "num_gpus": 0.5},
        learner={"model": '/models/a "b"\\c ü', "lr": 1e-300, "kl_coef": 0.0, "beta": 2 / 3, "scorer": "none"},
        cluster={
            "address": "ray://head:10001",
            "run_dir": "runs/x\ny\t\x7f\x01",
            "timeout_s": 1e17,
            "trackers": ["wandb", "tensorboard"],
        },
    )
    check(cfg)
    loaded = load(write(tmp_path, dump(cfg)))
    assert loaded == cfg
    assert type(loaded.learner.kl_coef) is float


def test_dump_of_defaults_loads_as_defaults(tmp_path):
    assert load(write(tmp_path, dump(Config()))) == Config()


def test_dump_writes_sections_as_tables():
    text = dump(Config())
    assert text.startswith(f"num_iterations = {Config().num_iterations}\nseed = 0\n")
    for section in ("env", "actors", "learner", "cluster"):
        assert f"\n[{section}]\n" in text
    assert 'address = ""' in text and "lr = 2e-05" in text


# --- check ---


def test_check_rejects_batch_not_multiple_of_group():
    with pytest.raises(ConfigError) as e:
        check(replace(learner={"batch_size": 30, "group_size": 8}))
    assert "learner.batch_size (30) must be a multiple of learner.group_size (8)" in str(e.value)


def test_check_rejects_batch_not_multiple_of_num_learners():
    expected = "learner.batch_size (32) must be a multiple of learner.num_learners (3)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check(replace(learner={"num_learners": 3, "batch_size": 32}))


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"num_iterations": 0}, "num_iterations (0)"),
        ({"env": {"name": "nowhere"}}, "env.name"),
        ({"env": {"max_steps": 0}}, "env.max_steps (0)"),
        ({"env": {"num_tasks": 3}}, "env.num_tasks (3)"),
        ({"actors": {"num_rollout_actors": 0}}, "actors.num_rollout_actors (0)"),
        ({"actors": {"temperature": 0.0}}, "actors.temperature (0.0)"),
        ({"actors": {"temperature": math.nan}}, "actors.temperature (nan)"),
        ({"actors": {"max_tokens": 0}}, "actors.max_tokens (0)"),
        ({"actors": {"max_trajectory_tokens": 12}}, "actors.max_trajectory_tokens (12)"),
        ({"learner": {"num_learners": 0}}, "learner.num_learners (0)"),
        ({"learner": {"group_size": 1, "batch_size": 32}}, "a group of one has no baseline"),
        ({"learner": {"zero_stage": 4}}, "learner.zero_stage (4)"),
        ({"learner": {"zero_stage": -1}}, "learner.zero_stage (-1)"),
        ({"learner": {"microbatch_tokens": 0}}, "learner.microbatch_tokens (0)"),
        ({"learner": {"kl_coef": -0.1}}, "learner.kl_coef (-0.1)"),
        ({"learner": {"beta": 0.0}}, "learner.beta (0.0)"),
        ({"cluster": {"dashboard_port": 0}}, "cluster.dashboard_port (0) must be in 1..65535"),
        ({"cluster": {"metrics_export_port": 65536}}, "cluster.metrics_export_port (65536) must be in 1..65535"),
        ({"cluster": {"metrics_export_port": 8265}}, "must differ"),
        ({"cluster": {"save_every": -1}}, "cluster.save_every (-1)"),
        ({"cluster": {"timeout_s": 0.0}}, "cluster.timeout_s (0.0)"),
        ({"cluster": {"trackers": ["tensorboard", "neptune"]}}, "['neptune'] unknown; trackers are tensorboard"),
        ({"cluster": {"trackers": ["mlflow", "mlflow"]}}, "names a tracker twice"),
        ({"cluster": {"eval_every": -1}}, "cluster.eval_every (-1)"),
        ({"cluster": {"eval_num_tasks": -2}}, "cluster.eval_num_tasks (-2)"),
        ({"learner": {"lr_warmup_iterations": -1}}, "learner.lr_warmup_iterations (-1)"),
        ({"learner": {"lr_min_ratio": 1.5}}, "learner.lr_min_ratio (1.5) must be in [0, 1]"),
    ],
)
def test_check_rejects_out_of_range_value_naming_key(changes, key):
    with pytest.raises(ConfigError) as e:
        check(replace(**changes))
    assert key in str(e.value)


def test_check_accepts_boundary_values():
    check(replace(learner={"group_size": 2, "zero_stage": 0, "kl_coef": 0.0}, env={"num_tasks": 16}))
    check(replace(cluster={"save_every": 0, "dashboard_port": 1, "metrics_export_port": 65535}))


def test_check_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        check(replace(num_iterations=0, learner={"batch_size": 30}, actors={"temperature": 0.0}))
    assert len(str(e.value).splitlines()) == 3


def test_check_rejects_wrong_type_built_in_code():
    with pytest.raises(ConfigError, match=r"learner\.zero_stage: expected int, got True"):
        check(replace(learner={"zero_stage": True}))
    with pytest.raises(ConfigError, match=r"cluster: expected ClusterConfig"):
        check(Config(cluster=EnvConfig()))


def test_tasks_per_iteration_is_batch_over_group():
    assert tasks_per_iteration(replace(learner={"batch_size": 32, "group_size": 8})) == 4


def test_sections_are_the_package_configs():
    cfg = Config()
    assert (type(cfg.env), type(cfg.actors), type(cfg.learner), type(cfg.cluster)) == (
        EnvConfig,
        ActorConfig,
        LearnerConfig,
        ClusterConfig,
    )


def test_check_rejects_frozen_scorer_without_its_model():
    with pytest.raises(ConfigError, match="needs learner.scorer_policy"):
        check(replace(learner={"scorer": "frozen"}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["actors.tensor_parallel_size=2"], r"actors\.tensor_parallel_size \(2\) > 1 needs .*actors\.num_gpus = 2"),
        (["learner.max_staleness=-1"], r"learner\.max_staleness \(-1\) must be >= 0"),
        (["learner.max_importance_ratio=0.5"], r"learner\.max_importance_ratio \(0\.5\) must be >= 1"),
        (["actors.engine_timeout_s=0"], r"actors\.engine_timeout_s \(0\.0\) must be > 0"),
    ],
)
def test_rollout_and_staleness_limits_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(None, overrides)


def test_tensor_parallel_engine_with_its_gpus_is_accepted():
    cfg = load(None, ["actors.tensor_parallel_size=2", "actors.num_gpus=2", "cluster.colocate_scorer=true"])
    assert cfg.actors.tensor_parallel_size == 2 and cfg.cluster.colocate_scorer


def test_env_options_come_from_the_file_and_overrides_and_dump_back(tmp_path):
    path = write(tmp_path, '[env]\nname = "textworld_express/coin"\n[env.options]\ngame_params = "numLocations=3"\n')
    cfg = load(path, ["env.options.list_actions=false", "env.options.latency_s=0.5", "env.options.label=a b"])
    assert cfg.env.options == {"game_params": "numLocations=3", "list_actions": False, "latency_s": 0.5, "label": "a b"}
    assert cfg.env.make_env_kwargs() == {"max_steps": 4, "num_tasks": 512, **cfg.env.options}
    assert load(write(tmp_path, dump(cfg))) == cfg


def test_env_options_must_be_a_table_of_plain_values(tmp_path):
    with pytest.raises(ConfigError, match=r"env\.options: expected a table of option"):
        load(None, ["env.options=3"])
    with pytest.raises(ConfigError, match=r"env\.options: expected a table of option"):
        load(write(tmp_path, "[env.options]\nnested = {a = 1}\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["tensorboard", "mlflow"]', ["tensorboard", "mlflow"]),
        ("tensorboard,mlflow", ["tensorboard", "mlflow"]),
        ("wandb", ["wandb"]),
        ("", []),
        ("[]", []),
    ],
)
def test_a_list_override_takes_a_toml_array_or_comma_separated_words(text, expected):
    assert load(None, [f"cluster.trackers={text}"]).cluster.trackers == expected


def test_a_list_in_the_file_must_hold_strings(tmp_path):
    assert load(write(tmp_path, '[cluster]\ntrackers = ["mlflow"]\n')).cluster.trackers == ["mlflow"]
    with pytest.raises(ConfigError, match=r"cluster.trackers: expected a list of str, got \[1\]"):
        load(write(tmp_path, "[cluster]\ntrackers = [1]\n"))
    with pytest.raises(ConfigError, match="cluster.trackers: expected a list of str, got 'mlflow'"):
        load(write(tmp_path, '[cluster]\ntrackers = "mlflow"\n'))
