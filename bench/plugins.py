"""Methods and tasks from other installed packages, through Python entry points.

A package declares, in its pyproject.toml::

    [project.entry-points."decompbench.methods"]
    my-method = "my_package.module:MyMethod"      # a methods.base.Method dataclass

    [project.entry-points."decompbench.tasks"]
    my-task = "my_package.module:MyTask"          # a tasks.base.Task dataclass

A plugin that cannot be imported (a missing module or attribute, a syntax error, a missing dependency), that is
not a Method/Task subclass with a name, or whose name is taken, is skipped with a one-line warning naming its
package; it never breaks the others. Any other error raised by the plugin's own code while it is imported is a bug
in that code and surfaces with its traceback, as does an out-of-memory error.
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
        except (ImportError, AttributeError, SyntaxError) as e:  # not installed whole, or names nothing there
            _skip(ep.name, package, f"{type(e).__name__}: {e}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, base) and getattr(cls, "name", "")):
            _skip(ep.name, package, f"{ep.value} is not a {base.__module__}.{base.__name__} subclass with a name")
            continue
        if cls.name in registry:
            print(f"warning: skipped plugin {cls.name!r} from package {package!r}: the name is taken by "
                  f"{origins.get(cls.name, BUILTIN)}", file=sys.stderr)
            continue
        registry[cls.name] = cls
        origins[cls.name] = package


def _skip(name: str, package: str, why: str) -> None:
    print(f"warning: skipped plugin {name!r} from package {package!r}: {why}", file=sys.stderr)
