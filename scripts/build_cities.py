#!/usr/bin/env python3
"""Rebuild ``tasks/disentanglement/cities.tsv``: cities with their country and continent, from Debian packages.

Sources (both installed on Debian by default; nothing is downloaded):

* ``tzdata``: ``/usr/share/zoneinfo/zone1970.tab`` (public domain). Each row is a time zone such as
  ``Europe/Paris`` with the ISO 3166 codes of the countries it covers, the zone's own country first. The city is
  the zone name's last component with underscores read as spaces (``America/Argentina/Buenos_Aires`` -> Buenos
  Aires); its country is the row's first code. The version is read from ``tzdata.zi`` ("# version 2025b").
* ``iso-codes``: ``/usr/share/iso-codes/json/iso_3166-1.json`` (LGPL-2.1-or-later) for the country names: the
  ``common_name`` where there is one (South Korea, Iran, Vietnam), else ``name`` up to its first comma
  ("Palestine, State of" -> Palestine); two names are overridden with the English name the subject model learned
  (``NAME_OVERRIDES``: Russian Federation -> Russia, Türkiye -> Turkey). Version from ``iso-codes.pc``.

The continent is the zone's area, which tzdata chooses by continent: Africa, Asia, Europe; Australia -> Australia
(the continent's English name); America -> South America for the countries of ``SOUTH_AMERICA`` (which includes
French Guiana and the Falklands), else North America (Central America, the Caribbean and Greenland included).
Zones of the ocean areas (Atlantic, Indian, Pacific) and of Antarctica and the Arctic are left out: an island's
continent is a convention, not a fact a model can be asked about. Where two zones give the same city name the
first in zone order is kept.

Output: a UTF-8 TSV, a ``#`` header naming the sources, versions and licences, then ``city, country, continent,
country_code, zone`` sorted by zone. The output depends only on the two source files, so it rebuilds
byte-identically (tests/test_disentanglement.py checks the shipped file where the sources are installed).

Usage::

    python scripts/build_cities.py [--out tasks/disentanglement/cities.tsv]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ZONE1970 = Path("/usr/share/zoneinfo/zone1970.tab")
TZDATA_ZI = Path("/usr/share/zoneinfo/tzdata.zi")
ISO3166 = Path("/usr/share/iso-codes/json/iso_3166-1.json")
ISO_PC = Path("/usr/share/pkgconfig/iso-codes.pc")
OUT = Path(__file__).resolve().parents[1] / "tasks" / "disentanglement" / "cities.tsv"

AREAS = {"Africa": "Africa", "Asia": "Asia", "Europe": "Europe", "Australia": "Australia"}
SOUTH_AMERICA = frozenset({"AR", "BO", "BR", "CL", "CO", "EC", "FK", "GF", "GY", "PE", "PY", "SR", "UY", "VE"})
NAME_OVERRIDES = {"RU": "Russia", "TR": "Turkey"}
COLUMNS = ("city", "country", "continent", "country_code", "zone")


def _version(path: Path, pattern: str) -> str:
    m = re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE)
    if not m:
        raise SystemExit(f"no version found in {path}")
    return m.group(1)


def country_names(iso_json: Path) -> dict[str, str]:
    """ISO alpha-2 code -> the country's everyday English name (see the module docstring)."""
    out = {}
    for c in json.loads(iso_json.read_text(encoding="utf-8"))["3166-1"]:
        out[c["alpha_2"]] = NAME_OVERRIDES.get(c["alpha_2"], c.get("common_name") or c["name"].split(",")[0])
    return out


def continent(zone: str, code: str) -> str | None:
    area = zone.split("/")[0]
    if area == "America":
        return "South America" if code in SOUTH_AMERICA else "North America"
    return AREAS.get(area)


def rows(zone_tab: Path, names: dict[str, str]) -> list[tuple[str, ...]]:
    out, seen = [], set()
    for line in zone_tab.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        codes, _coords, zone = line.split("\t")[:3]
        code = codes.split(",")[0]
        cont = continent(zone, code)
        city = zone.rsplit("/", 1)[1].replace("_", " ")
        if cont is None or city in seen:
            continue
        seen.add(city)
        out.append((city, names[code], cont, code, zone))
    return sorted(out, key=lambda r: r[4])


def build(zone_tab: Path = ZONE1970, tzdata_zi: Path = TZDATA_ZI, iso_json: Path = ISO3166,
          iso_pc: Path = ISO_PC) -> bytes:
    """The derived file's bytes from the source files."""
    tz_version = _version(tzdata_zi, r"^# version (\S+)")
    iso_version = _version(iso_pc, r"^Version: (\S+)")
    header = [
        "# Cities with their country and continent, for decompbench's disentanglement task.",
        f"# Built by scripts/build_cities.py from Debian's tzdata {tz_version} (zoneinfo/zone1970.tab: zone, "
        "country code; public domain)",
        f"# and iso-codes {iso_version} (json/iso_3166-1.json: country names; LGPL-2.1-or-later). "
        "This file: the same terms as its sources.",
        "\t".join(COLUMNS),
    ]
    body = ["\t".join(r) for r in rows(zone_tab, country_names(iso_json))]
    return ("\n".join(header + body) + "\n").encode("utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    data = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    n = len(data.splitlines()) - 4  # less the header
    print(f"wrote {args.out}: {n} cities")


if __name__ == "__main__":
    main()
