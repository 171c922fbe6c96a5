"""BraTS training items per second that one loader worker delivers: from the memory cache, from the disk cache, and
from the NIfTI files, with the bundle's own training pipeline (``train#preprocessing`` of ``configs/train.yaml``:
load, 1 mm, brain crop, z-score, then the random 128^3 crop, flips, rotations and intensity jitter).

The real MSD case ``Task01_BrainTumour`` BRATS_001 (its 4 x 240 x 240 x 155 image) is listed ``--cases`` times; each
arm is a ``shared_networks.MemoryThenDiskDataset`` over that list read by one ``DataLoader(num_workers=0)`` with one
torch thread, i.e. what one loader worker does: ``memory`` (``cache_rate`` 1), ``disk`` (``cache_rate`` 0, the disk
cache written before timing), ``files`` (``cache_rate`` 0, no disk cache: the whole pre-processing at every use).
Arms run alternately, one pass each per round; the median is reported. The projection for a node: ``--workers``
workers (default 15 of 16 cores) delivering items for a fine-tuning step of 2 volumes that takes about 0.9 s on an
H100 (docs/study.md), for MSD Task01 (290 training cases) and BraTS 2021 (751).

Measure on an idle machine: every figure is CPU time of one core.

Usage::

    python benchmarks/brats_loader.py [--data ../shared/data/Task01_BrainTumour] [--cases 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import device_name  # noqa: E402

from shared_networks.data.caching import MemoryThenDiskDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "brats_mae_segmentation"
STEP_S = 0.9  # fine-tuning step of 2 volumes x 1 crop of 128^3 on an H100, fp32 (docs/study.md)
TRAINING_CASES = {"MSD Task01": 290, "BraTS 2021": 751}


def pipeline():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(BUNDLE), "num_workers": 0})
    return parser.get_parsed_content("train#preprocessing")


def one_pass(dataset) -> float:
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(dataset) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "Task01_BrainTumour"))
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    item = {"image": str(data / "imagesTr/BRATS_001.nii.gz"), "label": str(data / "labelsTr/BRATS_001.nii.gz")}
    items = [dict(item, case=i) for i in range(args.cases)]  # distinct items: the disk cache keys by content
    with tempfile.TemporaryDirectory() as tmp:
        transform = pipeline()
        arms = {
            "memory": MemoryThenDiskDataset(items, transform, cache_rate=1.0, progress=False),
            "disk": MemoryThenDiskDataset(items, transform, cache_rate=0.0, cache_dir=tmp),
            "files": MemoryThenDiskDataset(items, transform, cache_rate=0.0, cache_dir=None),
        }
        one_pass(arms["disk"])  # write the disk cache
        disk_mib = sum(f.stat().st_size for f in Path(tmp).glob("*.pt")) / len(items) / 1024**2
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            for arm, dataset in arms.items():
                rates[arm].append(one_pass(dataset))
    need = 2 / STEP_S
    result = {
        "benchmark": "brats_loader",
        "items_per_s_per_worker": {arm: round(statistics.median(r), 2) for arm, r in rates.items()},
        "rates": {arm: [round(x, 2) for x in r] for arm, r in rates.items()},
        "disk_cache_mib_per_case": round(disk_mib, 1),
        "gpu_step_items_per_s": round(need, 2),
        "loadavg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
        "machine": device_name(torch.device("cpu")),
    }
    for arm, r in result["items_per_s_per_worker"].items():
        result[f"{arm}_workers_to_feed_the_step"] = round(need / r, 2)
        result[f"{arm}_epoch_min_at_{args.workers}_workers"] = {
            name: round(max(n / (r * args.workers), n / 2 * STEP_S) / 60, 1) for name, n in TRAINING_CASES.items()
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
