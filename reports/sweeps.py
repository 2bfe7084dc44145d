"""Sweep curves: for a method run at several settings, each task's metrics against the swept parameters."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def sweep_curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """`{method_name: {task: [{"method", "params", "metrics"}, ...]}}` for every method seen at >1 setting.

    `params` holds only the parameters that vary across that method's points, so a curve reads directly.
    """
    points: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("matched_k") is not None and not r.get("sparse"):
            continue  # top-k variants of dense methods are not sweep points
        points[r["method_name"]][r["task"]].append(r)
    curves: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, by_task in points.items():
        settings = {tuple(sorted(r["method_params"].items())) for rs in by_task.values() for r in rs}
        if len(settings) < 2:
            continue
        keys = sorted({k for s in settings for k, _ in s})
        varying = [k for k in keys if len({dict(s).get(k) for s in settings}) > 1]
        curves[name] = {
            task: sorted(
                ({"method": r["method"], "params": {k: r["method_params"][k] for k in varying},
                  "metrics": {m: v["value"] for m, v in r["metrics"].items()}} for r in rs),
                key=lambda p: tuple(_sortable(p["params"][k]) for k in varying),
            )
            for task, rs in by_task.items()
        }
    return curves


def _sortable(value: Any) -> tuple[int, Any]:
    """Numbers in numeric order, anything else after them as text."""
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))
