"""[env] Env names -> env factories: the built-in names, `module:Class` paths and installed entry points.

    name -> [resolve] -> factory(seed=..., max_steps=..., num_tasks=..., **options) -> Env

A name is looked up in this order:
1. a built-in name (`corridor`, `tools`, `<suite>/<game>`...; see envs/__init__.py);
2. `package.module:Class` (a dotted attribute after the colon works too), imported from sys.path: the user's
   own env, importable from PYTHONPATH, the working directory or an installed package;
3. a short name that an installed distribution registers in the entry-point group `freelunch.envs`, e.g. in
   its pyproject.toml `[project.entry-points."freelunch.envs"] myenv = "mypkg.envs:MyEnv"`.
Whatever the name resolves to must have the protocol's methods (envs/base.py): a class that lacks one is
refused with the method's name before anything starts. `load_object` is the importer of every `module:name`
the envs take (an env class, a dataset's reward function).
"""

import importlib
import importlib.metadata
from collections.abc import Callable

ENTRY_POINT_GROUP = "freelunch.envs"
PROTOCOL = ("tasks", "reset", "step")  # the methods of envs.base.Env


class EnvSpecError(ValueError):
    """An env name or a `module:name` that does not resolve; the message says what was found and expected."""


def load_object(spec: str, what: str) -> object:
    """The object that `module:attribute` names (the attribute may be dotted), imported from sys.path.

    `what` names the object in errors ("env", "reward function"). A module that fails to import is reported
    with its own error, whatever it raised (a SyntaxError, a missing dependency).
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise EnvSpecError(f"{what} {spec!r} must be 'module:name', e.g. 'mypkg.mymodule:MyEnv'")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise EnvSpecError(
            f"{what} {spec!r}: module {module_name!r} does not import: {type(error).__name__}: {error}"
        ) from error
    found = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            where = getattr(module, "__file__", None) or module_name
            raise EnvSpecError(f"{what} {spec!r}: {where} has no attribute {attribute!r}")
        found = getattr(found, part)
    return found


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The env names installed distributions register in ENTRY_POINT_GROUP, by name."""
    return {point.name: point for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve(name: str, builtin: Callable[[str], Callable | None], builtin_names: list[str]) -> Callable:
    """The factory of env `name`: `builtin(name)` if it knows the name, else a `module:Class`, else an entry point.

    Raises EnvSpecError: for a module that does not import (its error), a class without a protocol method (the
    method), or a name that is none of these (the built-in and the registered names).
    """
    factory = builtin(name)
    if factory is not None:
        return factory
    if ":" in name:
        return _checked(load_object(name, "env"), name)
    points = entry_points()
    if name in points:
        try:
            loaded = points[name].load()
        except Exception as error:
            raise EnvSpecError(
                f"env {name!r} is registered in {ENTRY_POINT_GROUP!r} as {points[name].value!r}, which does not "
                f"load: {type(error).__name__}: {error}"
            ) from error
        return _checked(loaded, f"{name} ({points[name].value})")
    registered = ", ".join(sorted(points)) or f"none (no installed distribution registers {ENTRY_POINT_GROUP!r})"
    raise EnvSpecError(
        f"unknown env {name!r}; available: {', '.join(builtin_names)}. Registered entry points: {registered}. "
        "Your own env class is named 'module:Class', importable from PYTHONPATH"
    )


def _checked(factory: object, name: str) -> Callable:
    """`factory` if it is callable and, when it is a class, has every protocol method; else EnvSpecError."""
    if not callable(factory):
        raise EnvSpecError(f"env {name!r} is a {type(factory).__name__}, not an env class or factory")
    if isinstance(factory, type):
        missing = [method for method in PROTOCOL if not callable(getattr(factory, method, None))]
        if missing:
            raise EnvSpecError(
                f"env {name!r}: class {factory.__qualname__} lacks the env protocol's "
                f"{', '.join(f'{method}()' for method in missing)} (envs/base.py: tasks(split), reset(task), "
                "step(action))"
            )
    return factory
