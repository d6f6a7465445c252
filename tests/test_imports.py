"""The import rules of STYLE.md 7a: direction envs <- actors <- learner <- cluster, and heavy imports fenced."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["envs", "actors", "learner", "cluster"]
# Which project packages each package may import; learner may use the two boundary contracts of actors.
ALLOWED = {"envs": {"envs"}, "actors": {"envs", "actors"}, "learner": {"actors", "learner"}, "cluster": set(PACKAGES)}
LEARNER_FROM_ACTORS = {"actors.trajectory", "actors.broadcast"}
FENCES = {"vllm": {"actors/engine.py"}, "deepspeed": {"learner/learner.py", "learner/scorer.py"}}
PURE = [
    "envs",
    "actors/agent_loop.py",
    "actors/render.py",
    "actors/trajectory.py",
    "learner/logp.py",
    "learner/advantage.py",
    "learner/aggregate.py",
    "actors/transcript.py",
    "learner/loss.py",
]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_in_the_allowed_direction(package):
    for path in _files(package):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in PACKAGES:
                assert top in ALLOWED[package], f"{path.relative_to(REPO)} imports {name}"
                if package == "learner" and top == "actors":
                    assert name in LEARNER_FROM_ACTORS, f"{path.relative_to(REPO)} imports {name}"


def test_heavy_imports_are_fenced():
    for package in PACKAGES:
        for path in _files(package):
            relative = str(path.relative_to(REPO))
            for name in _imports(path):
                top = name.split(".")[0]
                if top in FENCES:
                    assert relative in FENCES[top], f"{relative} imports {top}"
                if top == "ray":
                    assert relative.startswith("cluster/"), f"{relative} imports ray"


def test_pure_modules_import_no_ray_vllm_or_deepspeed():
    for entry in PURE:
        for path in _files(entry) if (REPO / entry).is_dir() else [REPO / entry]:
            tops = {name.split(".")[0] for name in _imports(path)}
            assert not tops & {"ray", "vllm", "deepspeed"}, path


def test_packages_resolve_inside_the_repo():
    import importlib

    for package in PACKAGES:
        assert Path(importlib.import_module(package).__file__).resolve().is_relative_to(REPO), package
