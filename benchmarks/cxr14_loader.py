"""Chest radiographs per second that one loader worker delivers: from the original PNGs vs from the prepared store.

Both arms run the chest X-ray bundle's own training pipeline, read from ``configs/train.yaml`` at ``--size``
(``train#preprocessing`` and the batch augmentation ``augment``, ``shared_networks.BatchAugment2d``, as the loader's
``collate_fn``): the ``png`` arm with ``prepared_dir`` null (load, grey, area resize, pad, normalise), the ``store``
arm with ``prepared_dir`` set to a store that ``shared_networks.cli.prepare cxr14 --output_dir`` wrote (built here
in a temporary folder unless ``--store`` names one). Each arm is one ``DataLoader(num_workers=0)`` in this process
with one torch thread, i.e. what one loader worker does; the arms run alternately, one pass each per round, and the
median is reported. The projection for a node assumes the rate scales with the workers (``--workers``, default one
per core but two, as ``num_workers: auto`` on a GPU) and that the store is in the page cache (5.6 GB at 224^2) or
on a local disk.

Measure on an idle machine: every figure is CPU time of one core.

Usage::

    python benchmarks/cxr14_loader.py [--data ../shared/data/chestxray14] [--size 224] [--count 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import device_name  # noqa: E402

from shared_networks.data.cxr14 import TEST_LIST, TRAIN_VAL_LIST, find_cxr14_images  # noqa: E402
from shared_networks.data.prepared import PreparedRadiographs, write_cxr14_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "cxr14_mae_classification"
NIH_IMAGES = 112_120


def bundle_pipeline(size: int, prepared_dir: Path | None) -> tuple:
    """``train#preprocessing`` and ``augment`` of the bundle's train.yaml at ``size`` (``prepared_dir``: the store)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(BUNDLE), "img_size": [size, size], "num_workers": 0})
    parser["prepared_dir"] = None if prepared_dir is None else str(prepared_dir)
    return parser.get_parsed_content("train#preprocessing"), parser.get_parsed_content("augment")


def listed_images(data: Path, count: int) -> list[Path]:
    """The images of the NIH split lists found on disk, the first ``count`` (0: all)."""
    images = find_cxr14_images(data)
    names = [n for f in (TRAIN_VAL_LIST, TEST_LIST) for n in (data / f).read_text().split() if n in images]
    if not names:
        raise SystemExit(f"no listed image under {data}")
    return [images[n] for n in (names[:count] if count > 0 else names)]


def one_pass(loader: DataLoader) -> tuple[float, int]:
    """Seconds for one pass over the loader and the images it delivered."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["image"].shape[0]
    return time.perf_counter() - t0, n


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "chestxray14")
    parser.add_argument("--size", type=int, default=224, help="img_size and the store's cache_size")
    parser.add_argument("--count", type=int, default=0, help="images per pass (0: every listed image)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (one pass per arm)")
    parser.add_argument("--store", type=Path, default=None, help="an existing store at --size (default: built here)")
    parser.add_argument("--cores", type=int, default=16, help="cores of the node of the projection")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader workers on it (default cores - 2, as num_workers auto on a GPU)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one loader worker
    torch.manual_seed(0)
    paths = listed_images(args.data, args.count)
    items = [{"image": str(p), "label": [0.0] * 14} for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        build_s = None
        store = args.store
        if store is None:
            t0 = time.perf_counter()
            store = write_cxr14_store(args.data, Path(tmp) / "store", args.size, missing="skip")
            build_s = time.perf_counter() - t0
        prepared = PreparedRadiographs(store)
        loaders = {}
        for arm, prepared_dir in (("png", None), ("store", store)):
            transform, augment = bundle_pipeline(args.size, prepared_dir)
            loaders[arm] = DataLoader(
                Dataset(items, transform), batch_size=args.batch, shuffle=True, num_workers=0, collate_fn=augment
            )
        for loader in loaders.values():  # warm-up: page cache, allocations
            one_pass(loader)
        times: dict[str, list[float]] = {k: [] for k in loaders}
        for _ in range(args.repeats):
            for arm, loader in loaders.items():
                dt, n = one_pass(loader)
                times[arm].append(dt)
        rate = {k: len(items) / statistics.median(v) for k, v in times.items()}
        workers = args.workers if args.workers is not None else max(1, args.cores - 2)
        rec = {
            "name": f"cxr14_loader_{args.size}",
            "device": device_name(torch.device("cpu")),
            "images": len(items),
            "batch": args.batch,
            "store_dtype": prepared.dtype,
            "store_bytes_per_image": prepared.array[0].nbytes,
            "store_build_s": None if build_s is None else round(build_s, 2),
            "png_images_per_s_per_worker": round(rate["png"], 1),
            "store_images_per_s_per_worker": round(rate["store"], 1),
            "ratio": round(rate["store"] / rate["png"], 2),
            "node_cores": args.cores,
            "node_loader_workers": workers,
            "node_png_images_per_s": round(rate["png"] * workers),
            "node_store_images_per_s": round(rate["store"] * workers),
            "epoch_s_png_112120": round(NIH_IMAGES / (rate["png"] * workers), 1),
            "epoch_s_store_112120": round(NIH_IMAGES / (rate["store"] * workers), 1),
            "png_pass_s": [round(t, 3) for t in times["png"]],
            "store_pass_s": [round(t, 3) for t in times["store"]],
            "threads": torch.get_num_threads(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(rec), flush=True)
        print(
            f"{args.size}^2, one worker: PNG {rate['png']:.0f} images/s, store {rate['store']:.0f} images/s; "
            f"{NIH_IMAGES:,} radiographs on a {args.cores}-core node ({workers} loader workers): "
            f"{rec['epoch_s_png_112120']:.0f} s per epoch from the PNGs, {rec['epoch_s_store_112120']:.0f} s from the "
            "store (the loader alone)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
