"""The plots a reader expects, built from result records as `plots.Chart`s (one board: one model and hook).

- sparsity–fidelity frontier: L0 vs FVU and L0 vs loss recovered, a curve per method (its full-width point and
  its top-k point, or the points of a sweep);
- autointerp: simulation and detection AUROC per method, with the task's 95% intervals;
- IOI: KL(clean ‖ patched) against k features moved, a curve per method;
- concept erasure: damage (KL on unrelated text) against the share of the concept erased, per concept and measure
  (retrained probe, the model's own answer), a curve over k per method, LEACE and mean-difference as reference points;
- toy superposition: MMCS against the swept sparsity coefficient when the run is a sweep, else against the toy L0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from reports.plots import Chart, Point, Series
from reports.sweeps import sweep_curves

CHANCE = 0.5  # concept_erasure's probes and answers are binary: chance is 0.5


def _value(rec: dict[str, Any], metric: str) -> float | None:
    v = rec.get("metrics", {}).get(metric, {}).get("value")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _by(records: list[dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    """Records of one task by method label."""
    return {r["method"]: r for r in records if r.get("task_name", r["task"]) == task}


def _name(rec: dict[str, Any]) -> str:
    return rec.get("method_name") or rec["method"].split("@")[0].split("[")[0]


def frontier(records: list[dict[str, Any]], metric: str, label: str, slug: str) -> Chart:
    """L0 (reconstruction) against `metric` ("reconstruction.fvu" or "loss_recovered.loss_recovered")."""
    recon = _by(records, "reconstruction")
    task, name = metric.split(".")
    series: dict[str, list[Point]] = defaultdict(list)
    for method, rec in _by(records, task).items():
        l0, y = _value(recon.get(method, {}), "l0"), _value(rec, name)
        if l0 is not None and y is not None:
            series[_name(rec)].append(Point(l0, y, method))
    return Chart(f"frontier-{slug}", f"Sparsity–fidelity: L0 vs {label}", "L0 (codes per token)", label,
                 [Series(n, pts) for n, pts in series.items()], x_log=True,
                 note="one curve per method: as fitted, and (dense methods) at the matched sparsity top-k")


def autointerp(records: list[dict[str, Any]]) -> Chart:
    recs = _by(records, "autointerp")
    methods = list(recs)
    series = []
    for metric, label in (("simulation", "simulation"), ("detection_auroc", "detection AUROC")):
        pts = []
        for i, method in enumerate(methods):
            m = recs[method]["metrics"].get(metric, {})
            if m.get("value") is not None:
                iv = m.get("interval")
                pts.append(Point(i, float(m["value"]), method, tuple(iv) if iv and None not in iv else None))
        series.append(Series(label, pts, line=False))
    judge = next((r["details"].get("judge", {}).get("name") for r in recs.values() if "details" in r), None)
    return Chart("autointerp", "Autointerp score per method" + (f" (judge {judge})" if judge else ""), "method",
                 "score (95% interval)", series, categories=methods,
                 hlines=[(0.5, "detection chance 0.5"), (0.0, "simulation chance 0")] if methods else [])


def ioi(records: list[dict[str, Any]]) -> Chart:
    series = []
    kl_cf = None
    for method, rec in _by(records, "ioi_patching").items():
        details = rec.get("details", {})
        kl_cf = kl_cf or details.get("model", {}).get("kl_counterfactual")
        pts = [Point(p["k"], p["kl"], method) for p in details.get("attribution_curve", [])
               if p.get("kl") is not None and p.get("k")]
        if pts:
            series.append(Series(method, pts))
    return Chart("ioi", "IOI patching: KL to the clean run vs features moved", "k (features moved)",
                 "KL(clean ‖ patched)", series, x_log=True,
                 hlines=[(kl_cf, "counterfactual run (k = 0)")] if kl_cf else [])


def erasure(records: list[dict[str, Any]]) -> list[Chart]:
    """One chart per (concept, measure) where the clean model is above chance on that measure."""
    recs = _by(records, "concept_erasure")
    concepts: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for method, rec in recs.items():
        for concept, d in rec.get("details", {}).get("concepts", {}).items():
            concepts[concept].append((method, d))
    charts = []
    for concept, entries in concepts.items():
        clean = entries[0][1].get("clean", {})
        for measure, label in (("probe", "retrained probe"), ("behaviour", "model's answer")):
            above = clean.get(measure, CHANCE) - CHANCE
            if above <= 0.05:
                continue  # nothing to erase on this measure

            series = []
            for method, d in entries:
                pts = [Point(r["top"]["kl"], s, f"{method}, k={r['k']}") for r in d.get("curve", [])
                       if (s := _share(r["top"], clean, measure)) is not None and r["top"].get("kl") is not None]
                if pts:
                    series.append(Series(method, pts))
            for ref, name in (("leace", "LEACE"), ("mean_difference", "mean difference")):
                d = entries[0][1].get(ref, {})
                if (s := _share(d, clean, measure)) is not None and d.get("kl") is not None:
                    series.append(Series(name, [Point(d["kl"], s, name)], line=False))
            charts.append(Chart(f"erasure-{concept}-{measure}", f"Concept erasure · {concept} · {label}",
                                "damage: KL(clean ‖ edited) on unrelated text", f"share erased ({label})", series,
                                hlines=[(1.0, "chance (fully erased)")]))
    return charts


def _share(measured: dict[str, Any], clean: dict[str, Any], measure: str) -> float | None:
    """The share of the clean model's above-chance score that an edit removed (1 = back to chance)."""
    if measure not in measured:
        return None
    return (clean[measure] - measured[measure]) / (clean[measure] - CHANCE)


def toy(records: list[dict[str, Any]]) -> Chart:
    """MMCS against the swept parameter (one numeric parameter varying), else against the toy L0."""
    curves = sweep_curves(records)
    series = []
    swept = set()
    for name, by_task in curves.items():
        pts = by_task.get("toy_superposition", [])
        keys = {k for p in pts for k in p["params"]}
        if len(keys) == 1 and all(isinstance(p["params"][k], (int, float)) for p in pts for k in keys):
            (key,) = keys
            swept.add(key)
            series.append(Series(f"{name} ({key})", [Point(float(p["params"][key]), p["metrics"]["mmcs"], p["method"])
                                                     for p in pts if p["metrics"].get("mmcs") is not None]))
    if series:
        return Chart("toy", "Toy superposition: MMCS vs sparsity coefficient", " / ".join(sorted(swept)), "MMCS",
                     series, x_log=all(p.x > 0 for s in series for p in s.points))
    by_name: dict[str, list[Point]] = defaultdict(list)
    for method, rec in _by(records, "toy_superposition").items():
        l0, mmcs = _value(rec, "l0"), _value(rec, "mmcs")
        if l0 is not None and mmcs is not None:
            by_name[_name(rec)].append(Point(l0, mmcs, method))
    return Chart("toy", "Toy superposition: MMCS vs L0 on the toy data", "L0 on the toy data", "MMCS",
                 [Series(n, p) for n, p in by_name.items()], x_log=True,
                 note="no sweep in this run: `python -m bench sweep \"sae-relu[l1_coeff=1e-3|3e-3|1e-2]\" "
                      "--tasks toy_superposition` gives MMCS against the coefficient")


def charts(records: list[dict[str, Any]]) -> list[Chart]:
    """Every chart this board's records can fill, in reading order; empty ones left out."""
    out = [frontier(records, "reconstruction.fvu", "FVU", "fvu"),
           frontier(records, "loss_recovered.loss_recovered", "loss recovered", "loss"),
           autointerp(records), ioi(records), *erasure(records), toy(records)]
    return [c for c in out if not c.empty]
