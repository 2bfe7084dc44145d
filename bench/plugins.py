"""Methods and tasks from other installed packages, through Python entry points.

A package declares, in its pyproject.toml::

    [project.entry-points."decompbench.methods"]
    my-method = "my_package.module:MyMethod"      # a methods.base.Method dataclass

    [project.entry-points."decompbench.tasks"]
    my-task = "my_package.module:MyTask"          # a tasks.base.Task dataclass

A plugin that fails to load, or whose name is taken, is skipped with a one-line warning naming its package;
it never breaks the others.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

BUILTIN = "decompbench"


def load_plugins(group: str, base: type, registry: dict[str, type], origins: dict[str, str]) -> None:
    """Add every entry point of `group` that is a subclass of `base` to `registry` (name -> class)."""
    for ep in entry_points(group=group):
        package = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, base) and getattr(cls, "name", "")):
                raise TypeError(f"{ep.value} is not a {base.__module__}.{base.__name__} subclass with a name")
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the run
            print(f"warning: skipped plugin {ep.name!r} from package {package!r}: {type(e).__name__}: {e}",
                  file=sys.stderr)
            continue
        if cls.name in registry:
            print(f"warning: skipped plugin {cls.name!r} from package {package!r}: the name is taken by "
                  f"{origins.get(cls.name, BUILTIN)}", file=sys.stderr)
            continue
        registry[cls.name] = cls
        origins[cls.name] = package
