"""The files that operate freelunch on clusters cannot rot: every config in cluster/configs loads and passes
check(), every `freelunch train` command written in a config header or a manifest is a real CLI form (it
runs with --dry-run), the `ray up` YAML matches Ray's schema and `ray start` options, the manifests have
the GPUs their configs reserve, and the Grafana dashboard queries only metrics freelunch exports."""

import ast
import json
import re
import shlex
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from cluster.cli import main
from cluster.config import Config, load

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "cluster" / "configs").glob("*.toml"))
DEPLOY = REPO / "cluster" / "deploy"
PACKAGES = ["actors", "cluster", "envs", "learner"]
PHASE_KEY = re.compile(r"(rollout|score|loss|time|system|broadcast)/\w*(@[\w-]*)?")


def _header(path: Path) -> str:
    """The comment block a file opens with, '#' stripped, continuation lines joined."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines).replace("\\\n", " ")


def _freelunch_commands(text: str) -> list[list[str]]:
    """argv of every `freelunch train ...` command in text, one per line; a command ends at two spaces or ` #`,
    where a comment on it begins."""
    commands = []
    for line in text.splitlines():
        if "freelunch train" in line:
            command = re.split(r"\s{2,}|\s#", line[line.index("freelunch train") :])[0]
            commands.append(shlex.split(command)[1:])
    return commands


def _gpus_reserved(cfg: Config) -> float:
    """GPUs the roles reserve (cluster/role.py): each rollout actor, each learner rank, and the one scorer
    unless it shares learner rank 0's bundle."""
    a, lc = cfg.actors, cfg.learner
    scorers = 0 if cfg.cluster.colocate_scorer else 1
    return a.num_gpus * a.num_rollout_actors + lc.num_gpus * (lc.num_learners + scorers)


# --- configs ---


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_loads_passes_check_and_has_a_header(path):
    load(str(path))  # the real loader, check() included
    header = _header(path)
    for part in ("Hardware:", "Launch:", "Expected:"):
        assert part in header, f"{path.name}: the header comment has no {part!r}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_sets_only_keys_that_differ_from_the_defaults(path):
    defaults = Config()
    for section, table in tomllib.loads(path.read_text()).items():
        if not isinstance(table, dict):
            assert getattr(defaults, section) != table, f"{path.name}: {section} is the default"
            continue
        for key, value in table.items():
            default = getattr(getattr(defaults, section), key)
            assert default != value, f"{path.name}: {section}.{key} = {value!r} is the default"


def test_config_headers_and_manifests_run_real_cli_forms(capsys):
    sources = [*CONFIGS, DEPLOY / "ray-cluster.yaml", DEPLOY / "rayjob.yaml"]
    commands = [(source, argv) for source in sources for argv in _freelunch_commands(source.read_text())]
    assert {source.name for source, _ in commands} == {source.name for source in sources}
    for source, argv in commands:
        config = next(arg for arg in argv if arg.endswith(".toml"))
        assert (REPO / config).is_file(), f"{source.name}: {config} does not exist"
        assert main([*argv, "--dry-run"]) == 0, f"{source.name}: freelunch {' '.join(argv)}"
    capsys.readouterr()


# --- ray up ---


def test_ray_cluster_yaml_matches_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text()), schema)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importing Ray's CLI imports Serve's pydantic models
def test_ray_cluster_yaml_starts_ray_with_real_options_on_loopback_with_token_auth():
    from ray.scripts.scripts import start

    cluster = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    starts = [
        command.split(";")[-1].strip()
        for command in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
        if "ray start" in command
    ]
    assert len(starts) == 2
    for command in starts:
        env, _, args = command.partition("ray start")
        assert "RAY_AUTH_MODE=token" in env.split()
        options = start.make_context("start", shlex.split(args)).params  # raises on an unknown option
        if options["head"]:
            assert options["dashboard_host"] == "127.0.0.1"
    assert all((REPO / local).exists() for local in cluster["file_mounts"].values() if not local.startswith("~"))


def test_manifests_have_the_gpus_their_configs_reserve():
    cluster = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    nodes = cluster["available_node_types"].values()
    cluster_gpus = sum(node.get("min_workers", 0) * node["resources"].get("GPU", 0) for node in nodes)
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    job_gpus = sum(
        group["replicas"] * int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
        for group in workers
        for container in group["template"]["spec"]["containers"]
    )
    runs = [(cluster_gpus, (DEPLOY / "ray-cluster.yaml").read_text()), (job_gpus, job["spec"]["entrypoint"])]
    for gpus, text in runs:
        for argv in _freelunch_commands(text):
            needed = _gpus_reserved(load(str(REPO / argv[1])))
            assert needed <= gpus, f"{argv[1]} reserves {needed} GPUs, the manifest has {gpus}"


def test_rayjob_runs_a_repo_config_with_token_auth_from_an_image_of_this_repo():
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    assert _freelunch_commands(job["spec"]["entrypoint"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    working_dir = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]
    assert f"WORKDIR {working_dir}" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert source.startswith("--") or (REPO / source).exists(), f"Dockerfile copies a missing {source}"


# --- Grafana ---


def _exported_keys() -> set[str]:
    """Metric keys the code writes: `phase/name` strings in the packages (an f-string key gives its prefix
    + "0"), and the constant keys of the dict that cluster/train.py hands to the metrics log."""
    keys = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if PHASE_KEY.fullmatch(node.value):
                        keys.add(node.value)
                elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                    if PHASE_KEY.fullmatch(str(node.values[0].value)):
                        keys.add(f"{node.values[0].value}0")
    for node in ast.walk(ast.parse((REPO / "cluster" / "train.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "write" and node.args:
            if isinstance(node.args[0], ast.Dict):
                keys.update(k.value for k in node.args[0].keys if isinstance(k, ast.Constant))
    return keys


def _exported_names() -> set[str]:
    """Prometheus names of those keys: cluster/log.py's gauge name, with the `ray_` Ray's export adds."""
    from cluster.log import gauge_name

    return {"ray_" + gauge_name(key) for key in _exported_keys()}


def _panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def test_dashboard_queries_only_metrics_freelunch_exports():
    dashboard = json.loads((DEPLOY / "grafana" / "freelunch.json").read_text())
    exported = _exported_names()
    assert "ray_freelunch_rollout_outcome_mean" in exported and "ray_freelunch_iteration" in exported
    exprs = [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", [])]
    exprs += [variable["query"]["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    assert len(exprs) > 20
    for expr in exprs:
        names = re.findall(r"\b(ray_freelunch_\w+)\s*[{,)]", expr)
        patterns = re.findall(r'__name__=~"([^"]+)"', expr)
        assert names or patterns, f"no freelunch metric in {expr}"
        for name in names:
            assert name in exported, f"{name} is not a metric freelunch exports ({expr})"
        for pattern in patterns:
            assert any(re.fullmatch(pattern, name) for name in exported), f"{pattern} matches no exported metric"


def test_dashboard_panels_use_the_datasource_variable_and_filter_by_session_and_run():
    dashboard = json.loads((DEPLOY / "grafana" / "freelunch.json").read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in _panels(dashboard) if panel["type"] != "row"]
    assert len({panel["id"] for panel in _panels(dashboard)}) == len(_panels(dashboard))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'SessionName=~"$SessionName", run=~"$run"' in target["expr"], panel["title"]
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("phase", "tokens", "outcome", "progress", "auroc", "kl", "staleness", "buffer", "broadcast"):
        assert topic in titles, f"no panel about {topic}"


def test_exporter_sets_every_gauge_again_so_series_stay_continuous(monkeypatch):
    # Ray drops a gauge's value from its endpoint ~20 s after it was set; iterations take longer.
    import ray.util.metrics

    from cluster.log import MetricsExporter

    values, again = [], threading.Event()

    class Recorder:
        def __init__(self, name, description="", tag_keys=()):
            pass

        def set(self, value, tags=None):
            values.append(value)
            if len(values) >= 3:
                again.set()

    monkeypatch.setattr(ray.util.metrics, "Gauge", Recorder)
    MetricsExporter(refresh_s=0.01).set({"loss/kl": 0.5, "rollout/outcome_mean": float("nan")})
    assert again.wait(timeout=10)
    assert set(values) == {0.5}  # the last value, again; NaN is never exported
