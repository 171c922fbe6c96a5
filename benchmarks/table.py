"""Markdown table of benchmark JSON lines (the output of ``run_all.py``), one row per measurement.

Usage::

    python benchmarks/run_all.py > results.jsonl && python benchmarks/table.py results.jsonl
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

COLUMNS = (
    "measurement",
    "ours",
    "anchor (MONAI)",
    "ratio anchor / ours: median (of minima)",
    "fraction of peak",
    "memory ours / anchor",
    "load (1 min)",
    "machine",
)


def row(rec: dict) -> list[str]:
    """One table row for a record of any of the scripts."""
    name = rec["name"]
    if name.startswith("data_"):
        return [
            name,
            f"{rec['ours_crops_per_s']} crops/s (cached)",
            f"{rec['monai_uncached_crops_per_s']} crops/s (uncached)",
            f"{rec['ratio']}",
            "-",
            f"cache {rec['cache_mb']} MiB ({rec['cache_mb_per_volume']} MiB/volume)",
            f"{rec['loadavg_1m']}",
            rec["device"],
        ]
    frac = "-"
    if "peak_fraction" in rec:
        frac = f"{rec['peak_fraction']} (MONAI {rec['monai_peak_fraction']}) of {rec['matmul_dtype']} matmul"
    unit = "s/step" if "step" in name or name.startswith("mae_") else "s"
    extra = ""
    if "ours_images_per_s" in rec:
        extra = f", {rec['ours_images_per_s']} img/s"
    if "max_abs_logit_diff" in rec:
        extra = f", max logit diff {rec['max_abs_logit_diff']:.1e}, labels agree {rec['label_agreement']}"
    return [
        name,
        f"{rec['ours_s']} {unit}{extra}",
        f"{rec['monai_s']} {unit}",
        f"{rec['ratio']} ({rec['monai_min_s'] / rec['ours_min_s']:.2f})",
        frac,
        "-" if rec["ours_peak_mb"] is None else f"{rec['ours_peak_mb']} / {rec['monai_peak_mb']} MiB",
        "-".join(str(v) for v in load) if isinstance(load := rec["loadavg_1m"], list) else str(load),
        rec["device"] + (f", {rec['precision']}" if "precision" in rec else ""),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    paths = list(argv if argv is not None else sys.argv[1:])
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.startswith("{"):
                    print("| " + " | ".join(row(json.loads(line))) + " |")


if __name__ == "__main__":
    main()
