"""Bytes per case that the 3D bundles' training caches hold, before and after the compact caches, on real cases.

For each bundle's ``train.yaml`` and ``pretrain.yaml`` and each real sample case in ``../shared/data`` (MSD Task01's
labelled BRATS_001; BTCV img0001 and img0002): **before**, the bundle's whole deterministic pre-processing in float32
(``deterministic_transforms`` with the cast types set to float32: the images and, in BraTS ``train.yaml``, the label as
its 3 region channels TC, WT, ET); **after**, what the training cache holds now (``train#preprocessing`` up to the
first transform after the cache: float16 images, the label as one uint8 channel). Also the header estimate that
``cache_rate: auto`` sizes the caches with, and a projection for the full data sets (the sample case's bytes times
the cases; cases differ in size, so a projection, not a measurement).

No timing: the figures do not depend on the machine's load.

Usage::

    python benchmarks/cache_bytes.py [--data ../shared/data] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from shared_networks.data.cache_budget import estimate_item_bytes

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024**2
CASES = {
    "brats_mae_segmentation": [
        ("Task01_BrainTumour/imagesTr/BRATS_001.nii.gz", "Task01_BrainTumour/labelsTr/BRATS_001.nii.gz")
    ],
    "btcv_mae_segmentation": [
        ("btcv/imagesTr/img0001.nii.gz", "btcv/labelsTr/label0001.nii.gz"),
        ("btcv/imagesTr/img0002.nii.gz", "btcv/labelsTr/label0002.nii.gz"),
    ],
}
# full data sets: cases in the training caches (train.yaml: training + validation folds; pretrain.yaml: training)
FULL = {
    "brats_mae_segmentation": {"MSD Task01 (484 labelled)": (387, 290), "BraTS 2021 (1,251)": (1001, 751)},
    "btcv_mae_segmentation": {"BTCV (30 labelled)": (24, 18)},
}


def _bytes(out: dict, keys: list[str]) -> int:
    return sum(out[k].numel() * out[k].element_size() for k in keys if isinstance(out[k], torch.Tensor))


def measure(bundle: str, workflow: str, image: Path, label: Path) -> dict:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "configs" / f"{workflow}.yaml"))
    parser.update({"bundle_root": str(ROOT / "bundles" / bundle), "num_workers": 0})
    keys = parser["load_keys"]
    item = {"image": str(image), "label": str(label)}
    item = {k: item[k] for k in keys}
    before = _bytes(Compose(parser.get_parsed_content("deterministic_transforms"))(dict(item)), keys)
    pipeline = parser.get_parsed_content("train#preprocessing")
    cached = pipeline(dict(item), end=pipeline.get_index_of_first(lambda t: isinstance(t, Compose)))
    after = _bytes(cached, keys)
    channels = {k: parser.get_parsed_content(f"cache_channels#{k}") for k in keys}
    dtypes = parser.get_parsed_content("cache_dtypes")
    return {
        "bundle": bundle,
        "workflow": workflow,
        "case": image.name,
        "before_mib": round(before / MIB, 1),
        "after_mib": round(after / MIB, 1),
        "ratio": round(before / after, 2),
        "estimate_mib": round(estimate_item_bytes(item, channels, parser["pixdim"], dtypes) / MIB, 1),
        "cached": {k: [str(cached[k].dtype).replace("torch.", ""), list(cached[k].shape)] for k in keys},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rows = []
    for bundle, cases in CASES.items():
        for workflow in ("train", "pretrain"):
            for image, label in cases:
                rows.append(measure(bundle, workflow, Path(args.data) / image, Path(args.data) / label))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| bundle | workflow | case | before (float32) | after (compact) | ratio | header estimate | cached |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cached = ", ".join(f"{k} {t} {'×'.join(map(str, s))}" for k, (t, s) in r["cached"].items())
        print(
            f"| {r['bundle']} | {r['workflow']} | {r['case']} | {r['before_mib']} MiB | {r['after_mib']} MiB | "
            f"{r['ratio']}× | {r['estimate_mib']} MiB | {cached} |"
        )
    print("\n| data set | workflow | cases cached | before | after |\n|---|---|---|---|---|")
    for bundle, sets in FULL.items():
        for workflow, column in (("train", 0), ("pretrain", 1)):
            mine = [r for r in rows if r["bundle"] == bundle and r["workflow"] == workflow]
            before = sum(r["before_mib"] for r in mine) / len(mine)
            after = sum(r["after_mib"] for r in mine) / len(mine)
            for name, counts in sets.items():
                n = counts[column]
                print(f"| {name} | {workflow} | {n} | {before * n / 1024:.1f} GiB | {after * n / 1024:.1f} GiB |")
    if args.json:
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
