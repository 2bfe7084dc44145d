"""Copy a finished run into a baseline directory to commit (e.g. baselines/smoke): what `compare` and the reports read.

    python scripts/make_baseline.py /tmp/smoke baselines/smoke

Keeps config.json, leaderboard.json and every result record (metrics, identity, details), minus the bulkiest
per-item lists that no report or comparison reads: the judge's per-token simulation predictions (autointerp) and the
toy's per-feature cosines. An existing tolerances.json in the destination is kept.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.io import atomic_write_json
from bench.results import read_result


def trim(record: dict) -> dict:
    details = record.get("details", {})
    if record.get("task") == "autointerp":  # its features and controls carry per-token predictions
        for feature in details.get("features", []) + details.get("calibration", {}).get("controls", []):
            feature.pop("simulation_excerpts", None)
    details.pop("max_cos_per_feature", None)
    return record


def main(src: Path, dst: Path) -> None:
    if (dst / "results").exists():
        shutil.rmtree(dst / "results")
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "leaderboard.json"):
        shutil.copy2(src / name, dst / name)
    for path in sorted((src / "results").glob("*.json")):
        if (record := read_result(path)) is not None:
            atomic_write_json(dst / "results" / path.name, trim(record))
    print(f"wrote {dst}: {len(list((dst / 'results').glob('*.json')))} results")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
