"""Training crops per second from real CT with the BTCV bundle's own pre-processing: cached vs uncached.

The transforms are read from the bundle's ``configs/train.yaml`` (``deterministic_transforms`` followed by
``train#random_transforms``: load, RAS, 1.5 x 1.5 x 2 mm, HU window, foreground crop, then
four 96^3 positive/negative crops, flips, rotations, intensity shift). Two arms over the same files, run alternately,
one epoch each per round, ``DataLoader(batch_size=1, num_workers=0)`` so that only the transforms are timed:

* ``uncached``: ``monai.data.Dataset``, every transform on every epoch (what a plain MONAI pipeline does);
* ``cached``: ``monai.data.CacheDataset`` (the bundle's), the deterministic part run once and kept in memory, the
  random part on every epoch. Its one-off build time and the memory it holds are reported.

Usage::

    python benchmarks/bench_data.py [--data ../shared/data/btcv] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Compose

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import current_rss_kb, device_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "btcv_mae_segmentation"


def bundle_transforms() -> tuple[list, list, int]:
    """The train workflow's deterministic and random transforms, and its crops per volume, from the configs."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    det = parser.get_parsed_content("deterministic_transforms")
    rand = parser.get_parsed_content("train#random_transforms")
    return det, rand, int(parser.get_parsed_content("num_samples"))


def btcv_items(data_dir: Path) -> list[dict[str, str]]:
    """Image/label pairs of the tutorial layout (``imagesTr/imgN``, ``labelsTr/labelN``), paired by case number."""
    labels = {re.findall(r"\d+", p.name)[0]: p for p in (data_dir / "labelsTr").glob("*.nii.gz")}
    items = []
    for img in sorted((data_dir / "imagesTr").glob("*.nii.gz")):
        case = re.findall(r"\d+", img.name)[0]
        if case in labels:
            items.append({"image": str(img), "label": str(labels[case])})
    if not items:
        raise SystemExit(f"no imagesTr/labelsTr pairs under {data_dir}")
    return items


def epoch(loader: DataLoader) -> tuple[float, int]:
    """Seconds for one pass and the number of 96^3 crops it produced."""
    t0 = time.perf_counter()
    crops = 0
    for batch in loader:
        crops += batch["image"].shape[0]
    return time.perf_counter() - t0, crops


def cache_bytes(ds: CacheDataset) -> int:
    """Bytes held by the cached (deterministic) items' arrays."""
    total = 0
    for item in ds._cache:
        for v in item.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "btcv")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (one epoch per arm)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    det, rand, num_samples = bundle_transforms()
    items = btcv_items(args.data)
    transform = Compose(det + rand)
    transform.set_random_state(0)

    uncached = Dataset(items, transform)
    gc.collect()
    rss0 = current_rss_kb()
    t0 = time.perf_counter()
    cached = CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_cache_mb = (current_rss_kb() - rss0) / 1024
    loaders = {
        "uncached": DataLoader(uncached, batch_size=1, shuffle=True, num_workers=0),
        "cached": DataLoader(cached, batch_size=1, shuffle=True, num_workers=0),
    }
    epoch(loaders["cached"])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in loaders}
    crops = {}
    for _ in range(args.repeats):
        for name, loader in loaders.items():
            dt, n = epoch(loader)
            times[name].append(dt)
            crops[name] = n
    rate = {k: crops[k] / statistics.median(times[k]) for k in loaders}
    rec = {
        "name": "data_btcv_train_crops",
        "device": device_name(torch.device("cpu")),
        "volumes": len(items),
        "crops_per_volume": num_samples,
        "ours_crops_per_s": round(rate["cached"], 2),
        "monai_uncached_crops_per_s": round(rate["uncached"], 2),
        "ratio": round(rate["cached"] / rate["uncached"], 2),
        "cache_build_s": round(build_s, 2),
        "cache_mb": round(cache_bytes(cached) / 2**20, 1),
        "cache_rss_mb": round(rss_cache_mb, 1),
        "cache_mb_per_volume": round(cache_bytes(cached) / 2**20 / len(items), 1),
        "ours_epoch_s": [round(t, 3) for t in times["cached"]],
        "monai_epoch_s": [round(t, 3) for t in times["uncached"]],
        "num_workers": 0,
        "threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
