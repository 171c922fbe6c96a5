"""A full-scale rehearsal of the chest X-ray data path: the NIH ChestX-ray14 folder at its real size, partly downloaded.

Writes a synthetic folder in the NIH layout (``--workdir``, a temporary folder by default): ``Data_Entry_2017.csv``
with the 112,120 rows of the real file (its columns and formats; 30,805 patients with their follow-ups; findings
drawn with the NIH prevalences, about 54 % "No Finding"), ``train_val_list.txt`` and ``test_list.txt`` split by
patient (about 86,524 / 25,596 images), and under ``images/`` only ``--images`` of the listed radiographs (the first
names of both lists, in their proportion): 8-bit grey PNGs of ``--side`` pixels, shifted and noised copies of a few
phantoms (``shared_networks.synthetic.cxr.make_cxr_phantom``; their pixels do not follow the labels). Then it times,
on that folder, every step from the download to a model:

1. writing the folder (CSV and lists; images per second);
2. ``shared_networks.data.cxr14.cxr14_datalist(root, missing="skip")``: the 112,120 rows read, the absent images left
   out; the training/validation/test counts;
3. the data-set checker as ``python -m shared_networks.cli.validate cxr14 --dataset_dir DIR --missing skip`` runs it
   (``validate_cxr14``, pixels decoded, 2 threads, the printed report included): images per second;
4. the compact store, ``shared_networks.data.prepared.write_cxr14_store`` (``python -m shared_networks.cli.prepare
   cxr14 --output_dir STORE --cache_size S``): images per second, bytes of ``images.npy``;
5. one epoch of the chest X-ray bundle's MAE pre-training from the store (``pretrain.yaml`` + ``small_data.yaml``:
   ViT-Tiny/16 at ``--size``, batch 64) in a child ``python -m monai.bundle run``: the epoch's wall time (ignite's
   ``Epoch[1] Complete`` line; the child's start, its data check and the caching of the images come before it), the
   child's whole wall time, and its peak resident memory (the kernel's ``ru_maxrss`` of the child from ``os.wait4``:
   the largest single process, the child or one of its loader workers). A peak over ``--max_rss_gib`` fails the run
   (exit status 1); so do a failed child and a missing ``mae.pt``. The child's data check (``check_split``, headers
   only when the store is read: ``check_pixels``) is timed from its log.

The ``full_*_projected`` fields scale the measured rates and shares to all 112,120 images on disk (projections, not
measurements), among them the float32 pixels that a training cache would hold with ``--cache_rate 1`` (the default
here is 0: the store is memory-mapped, and ``small_data.yaml``'s ``cache_rate`` 1.0 is for a few thousand images).

Prints one JSON line (stdout) and a short summary (stderr). Time it on an idle machine: every rate is the CPU time of
the cores given (``taskset``); the load average at the start and the end is in the record.

Usage::

    python benchmarks/cxr14_scale.py [--images 2000] [--side 1024] [--size 112] [--pretrain_images 0]
        [--cache_rate R] [--num_workers auto] [--max_rss_gib 4] [--workdir DIR] [--keep] [--no_pretrain]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import device_name  # noqa: E402
from bench_workflow import parse_log  # noqa: E402

from shared_networks.data.cxr14 import CXR14_FINDINGS, TEST_LIST, TRAIN_VAL_LIST, cxr14_datalist  # noqa: E402
from shared_networks.data.prepared import IMAGES_FILE, write_cxr14_store  # noqa: E402
from shared_networks.synthetic.cxr import make_cxr_phantom  # noqa: E402
from shared_networks.validation.datasets import validate_cxr14  # noqa: E402
from shared_networks.validation.images import MAX_PIXELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "cxr14_mae_classification"
CONFIGS = [str(BUNDLE / "configs" / f) for f in ("pretrain.yaml", "small_data.yaml")]
NIH_ROWS, NIH_PATIENTS, NIH_TEST = 112_120, 30_805, 25_596
CSV_NAME = "Data_Entry_2017.csv"
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# images with each finding in the NIH file, in CXR14_FINDINGS order: the weights of the drawn findings
PREVALENCE = (11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227)
NO_FINDING_SHARE = 0.54
# original sizes and pixel spacings of the NIH file: "width,height" and "x,y"
ORIGINALS = (("2500,2048", "0.168,0.168"), ("2048,2500", "0.171,0.171"), ("2992,2991", "0.143,0.143"))
BASE_FINDINGS = ((), ("Effusion",), ("Cardiomegaly",), ("Mass", "Nodule"))
GIB = 1024**3
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - ", re.M)


def patient_counts(rows: int, patients: int, rng: np.random.Generator) -> np.ndarray:
    """Images per patient: at least one each, geometric (NIH: most patients have one to a few, some dozens), summing
    to ``rows`` exactly."""
    if not 1 <= patients <= rows:
        raise ValueError(f"need 1 <= patients <= rows, got {patients} patients for {rows} rows")
    counts = rng.geometric(patients / rows, patients).astype(np.int64)
    while (diff := rows - int(counts.sum())) != 0:
        if diff > 0:
            np.add.at(counts, rng.integers(0, patients, diff), 1)
        else:
            over = np.flatnonzero(counts > 1)
            np.add.at(counts, rng.choice(over, min(-diff, over.size), replace=False), -1)
    return counts


def finding_labels(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` "Finding Labels" values: "No Finding", or 1.. findings ('|'-joined, sorted by name as in the NIH
    file) drawn without replacement with the NIH prevalences."""
    weights = np.asarray(PREVALENCE, dtype=np.float64)
    keys = np.log(weights / weights.sum()) + rng.gumbel(size=(n, len(CXR14_FINDINGS)))  # Gumbel top-k
    order = np.argsort(-keys, axis=1)
    sizes = np.minimum(rng.geometric(0.6, n), 6)
    normal = rng.random(n) < NO_FINDING_SHARE
    return [
        "No Finding" if normal[i] else "|".join(sorted(CXR14_FINDINGS[j] for j in order[i, : sizes[i]]))
        for i in range(n)
    ]


def generate_rows(rows: int = NIH_ROWS, patients: int = NIH_PATIENTS, seed: int = 0) -> list[tuple]:
    """The rows of ``Data_Entry_2017.csv`` in name order: ``(name, findings, follow_up, patient, age, gender, view,
    original_size, spacing)``; names ``{patient:08d}_{follow_up:03d}.png``."""
    rng = np.random.default_rng(seed)
    counts = patient_counts(rows, patients, rng)
    labels = finding_labels(rows, rng)
    ages, genders = rng.integers(1, 90, patients), rng.choice(["M", "F"], patients)
    views, originals = rng.random(rows) < 0.4, rng.integers(0, len(ORIGINALS), rows)
    out: list[tuple] = []
    for p, count in enumerate(counts):
        for follow_up in range(int(count)):
            i = len(out)
            size, spacing = ORIGINALS[originals[i]]
            age = min(95, int(ages[p]) + follow_up // 10)
            name = f"{p + 1:08d}_{follow_up:03d}.png"
            view = "AP" if views[i] else "PA"
            out.append((name, labels[i], follow_up, p + 1, age, genders[p], view, size, spacing))
    return out


def split_by_patient(rows: Sequence[tuple], test_images: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_val, test)`` image names, sorted: whole patients drawn at random into the test list until it holds
    about ``test_images`` images (never more)."""
    patients = sorted({r[3] for r in rows})
    per_patient: dict[int, int] = {}
    for r in rows:
        per_patient[r[3]] = per_patient.get(r[3], 0) + 1
    order = np.random.default_rng(seed + 1).permutation(len(patients))
    cumulative = np.cumsum([per_patient[patients[i]] for i in order])
    k = max(1, int(np.searchsorted(cumulative, test_images, side="right")))
    test_patients = {patients[i] for i in order[:k]}
    train_val = [r[0] for r in rows if r[3] not in test_patients]
    test = [r[0] for r in rows if r[3] in test_patients]
    return train_val, test


def present_names(train_val: Sequence[str], test: Sequence[str], images: int) -> list[str]:
    """The ``images`` names on disk: the first names of each list, in the lists' proportion (both lists have some
    once ``images`` >= 2), as a partial download of the first archives."""
    images = min(int(images), len(train_val) + len(test))
    n_test = round(images * len(test) / (len(train_val) + len(test)))
    n_test = min(len(test), max(n_test, 1 if images >= 2 else 0))
    return list(train_val[: images - n_test]) + list(test[:n_test])


def write_images(folder: Path, names: Sequence[str], side: int, seed: int = 0) -> dict:
    """8-bit grey ``side`` x ``side`` PNGs for ``names``: a few phantoms drawn once, each image one of them shifted by
    up to 1/32 of the side and with +-1 grey-level noise (fast zlib level 1). Returns seconds, images/s, bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 2)
    bases = [
        np.rint(make_cxr_phantom(f, size=side, seed=seed + i) * 255).astype(np.int16)
        for i, f in enumerate(BASE_FINDINGS)
    ]
    noise = [rng.integers(-1, 2, (side, side), dtype=np.int16) for _ in range(3)]
    bases_s = time.perf_counter() - t0
    written = 0
    for i, name in enumerate(names):
        shift = tuple(int(s) for s in rng.integers(-(side // 32), side // 32 + 1, 2))
        pixels = np.roll(bases[i % len(bases)], shift, axis=(0, 1)) + noise[(i // len(bases)) % len(noise)]
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name, compress_level=1)
        written += (folder / name).stat().st_size
    seconds = time.perf_counter() - t0
    return {
        "images_s": round(seconds, 2),
        "phantoms_s": round(bases_s, 2),
        "images_per_s": round(len(names) / max(seconds - bases_s, 1e-9), 1),
        "png_bytes": written,
    }


def write_nih_layout(
    root: Path,
    images: int = 2000,
    side: int = 1024,
    rows: int = NIH_ROWS,
    patients: int = NIH_PATIENTS,
    test_images: int = NIH_TEST,
    seed: int = 0,
) -> dict:
    """Write the synthetic NIH folder at ``root`` (CSV, both split lists, ``images`` PNGs under ``images/``).

    Returns:
        The figures of the step: rows, patients, list sizes, the names on disk (``present``), seconds and rates.
    """
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = generate_rows(rows, patients, seed)
    train_val, test = split_by_patient(table, test_images, seed)
    lines = [HEADER] + [",".join(str(v) for v in r) for r in table]
    (root / CSV_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / TRAIN_VAL_LIST).write_text("\n".join(train_val) + "\n", encoding="utf-8")
    (root / TEST_LIST).write_text("\n".join(test) + "\n", encoding="utf-8")
    text_s = time.perf_counter() - t0
    present = present_names(train_val, test, images)
    return {
        "rows": len(table),
        "patients": len({r[3] for r in table}),
        "train_val_list": len(train_val),
        "test_list": len(test),
        "images_present": len(present),
        "present": present,
        "side": side,
        "csv_and_lists_s": round(text_s, 2),
        **write_images(root / "images", present, side, seed),
    }


def time_datalist(root: Path) -> tuple[dict, dict]:
    """Step 2: ``cxr14_datalist(root, missing="skip")`` and its figures (seconds, counts)."""
    t0 = time.perf_counter()
    datalist = cxr14_datalist(root, missing="skip")
    seconds = time.perf_counter() - t0
    counts = {k: len(datalist[k]) for k in ("training", "validation", "test", "pretrain")}
    return datalist, {"datalist_s": round(seconds, 2), **counts}


def time_validation(root: Path, num_workers: int = 2) -> dict:
    """Step 3: the checker as ``python -m shared_networks.cli.validate cxr14 --missing skip`` runs it (pixels
    decoded), its printed report included; then once more reading headers only, which gives the part that does not
    decode (the CSV, the lists, a warning per absent image) and so the decoding rate. Raises SystemExit on an error
    of the data set."""
    t0 = time.perf_counter()
    report = validate_cxr14(root, "skip", None, True, num_workers, MAX_PIXELS)
    text = report.format(100)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"the checker found errors in the synthetic folder:\n{text[:4000]}")
    t0 = time.perf_counter()
    validate_cxr14(root, "skip", None, False, num_workers, MAX_PIXELS).format(100)
    headers = time.perf_counter() - t0
    return {
        "validate_s": round(seconds, 2),
        "validate_files": report.num_files,
        "validate_warnings": len(report.warnings),
        "validate_images_per_s": round(report.num_files / max(seconds, 1e-9), 1),
        "validate_headers_only_s": round(headers, 2),
        "validate_decode_images_per_s": round(report.num_files / max(seconds - headers, 1e-9), 1),
        "validate_workers": num_workers,
    }


def time_store(root: Path, store: Path, size: int, num_workers: int = 1) -> dict:
    """Step 4: ``write_cxr14_store(root, store, size, missing="skip")``: seconds, images/s, bytes on disk."""
    t0 = time.perf_counter()
    write_cxr14_store(root, store, size, missing="skip", num_workers=num_workers)
    seconds = time.perf_counter() - t0
    array = np.load(store / IMAGES_FILE, mmap_mode="r")
    return {
        "store_s": round(seconds, 2),
        "store_images": int(array.shape[0]),
        "store_images_per_s": round(array.shape[0] / max(seconds, 1e-9), 1),
        "store_bytes": (store / IMAGES_FILE).stat().st_size,
        "store_index_bytes": (store / "index.json").stat().st_size,
        "store_size": size,
        "store_workers": num_workers,
    }


def pretrain_command(root: Path, store: Path, work: Path, args: argparse.Namespace) -> list[str]:
    """The child ``python -m monai.bundle run`` of step 5: one epoch, no warm-up, ``--pretrain_images`` training
    images (0: all of them), ``--num_workers``, and ``--cache_rate`` when given."""
    size, images = args.size, args.pretrain_images
    overrides = {
        "dataset_dir": str(root),
        "prepared_dir": str(store),
        "missing_images": "skip",
        "img_size": json.dumps([size, size]),
        "max_epochs": "1",
        "warmup_epochs": "0",
        "num_workers": args.num_workers,
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "runs"),
    }
    if args.cache_rate is not None:
        overrides["cache_rate"] = str(args.cache_rate)
    if images > 0:
        overrides["train#dataset#data"] = f"$@datalist['pretrain'][:{int(images)}]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(CONFIGS)]
    cmd += ["--bundle_root", str(BUNDLE), "--meta_file", str(BUNDLE / "configs" / "metadata.json")]
    cmd += ["--logging_file", str(BUNDLE / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    return cmd


def run_child(cmd: Sequence[str], log: Path) -> tuple[int, float, int]:
    """Run ``cmd`` with its output in ``log``: ``(exit status, wall seconds, peak RSS bytes)``, the peak from
    ``os.wait4`` (this child and its waited-for descendants, the largest single process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return proc.returncode, time.perf_counter() - t0, int(usage.ru_maxrss) * 1024  # KiB on Linux


def small_data_setting(key: str) -> object:
    """A literal setting of the bundle's ``small_data.yaml`` (merged last, so it wins over ``pretrain.yaml``)."""
    return yaml.safe_load((BUNDLE / "configs" / "small_data.yaml").read_text(encoding="utf-8"))[key]


def check_seconds(log: str) -> float | None:
    """Seconds of the child's data check (``check_split``): from its datalist's log line to the checker's summary
    (``None`` without both lines)."""
    stamps = {}
    for m in LOG_TIME.finditer(log):
        line = log[m.end() : log.find("\n", m.end())]
        for key, marker in (("start", "shared_networks.data.cxr14 - INFO"), ("end", "files checked")):
            if marker in line and key not in stamps:
                stamps[key] = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")
    if len(stamps) < 2:
        return None
    return (stamps["end"] - stamps["start"]).total_seconds()


def run_pretrain(root: Path, store: Path, work: Path, args: argparse.Namespace, training: int) -> dict:
    """Step 5: one epoch of pre-training from the store in a child process; its figures. Raises SystemExit when the
    child fails or writes no ``mae.pt``."""
    cmd = pretrain_command(root, store, work, args)
    log = work / "pretrain.log"
    status, wall, peak = run_child(cmd, log)
    text = log.read_text(encoding="utf-8", errors="replace")
    if status != 0:
        raise SystemExit(f"pre-training failed (exit status {status}): {' '.join(cmd)}\n{text[-4000:]}")
    mae = work / "models" / "mae.pt"
    if not mae.is_file():
        raise SystemExit(f"pre-training wrote no {mae}:\n{text[-4000:]}")
    epochs, threads = parse_log(text)
    if not epochs:
        raise SystemExit(f"no 'Epoch[1] Complete' line in the pre-training log:\n{text[-4000:]}")
    images = training if args.pretrain_images <= 0 else min(args.pretrain_images, training)
    batch = int(small_data_setting("batch_size"))
    trained = images // batch * batch if images > batch else images  # drop_last_batch
    check = check_seconds(text)
    return {
        "pretrain_images": images,
        "pretrain_images_trained": trained,
        "epoch_s": round(epochs[0], 2),
        "epoch_images_per_s": round(trained / max(epochs[0], 1e-9), 1),
        "pretrain_wall_s": round(wall, 2),
        "pretrain_check_s": None if check is None else round(check, 2),
        "pretrain_check_images_per_s": None if not check else round(images / check, 1),
        "pretrain_torch_threads": threads,
        "peak_rss_bytes": peak,
        "peak_rss_gib": round(peak / GIB, 3),
        "mae_pt_bytes": mae.stat().st_size,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="PNGs on disk (of the 112,120 listed)")
    parser.add_argument("--side", type=int, default=1024, help="side of the PNGs in pixels")
    parser.add_argument("--size", type=int, default=112, help="the store's cache_size and the img_size trained at")
    parser.add_argument("--pretrain_images", type=int, default=0, help="training images of the epoch (0: all)")
    parser.add_argument("--num_workers", default="auto", help="the pre-training's num_workers setting")
    parser.add_argument("--cache_rate", type=float, default=0.0, help="the pre-training's (0: from the store)")
    parser.add_argument("--store_workers", type=int, default=1, help="processes writing the store")
    parser.add_argument("--check_workers", type=int, default=2, help="threads of the checker (the CLI's default)")
    parser.add_argument("--max_rss_gib", type=float, default=4.0, help="fail above this peak of the pre-training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="an absent or empty folder (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no_pretrain", action="store_true", help="stop after the store (steps 1-4)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.side < 32 or args.size < 16:
        parser.error("need --images >= 1, --side >= 32 and --size >= 16")
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty")
    return args


def rehearse(work: Path, args: argparse.Namespace) -> dict:
    """Steps 1-5 in ``work``; the record (without the machine's figures)."""
    root = work / "chestxray14"
    layout = write_nih_layout(root, args.images, args.side, seed=args.seed)
    layout.pop("present")
    _, counts = time_datalist(root)
    listed = counts["training"] + counts["validation"] + counts["test"]
    if listed != layout["images_present"]:
        raise SystemExit(f"the datalist holds {listed} images, {layout['images_present']} are on disk")
    record = {**layout, **counts, **time_validation(root, args.check_workers)}
    record.update(time_store(root, work / "store", args.size, args.store_workers))
    if not args.no_pretrain:
        record.update(run_pretrain(root, work / "store", work, args, counts["training"]))
    return {**record, **projections(record, args)}


def projections(rec: dict, args: argparse.Namespace) -> dict:
    """What the measured rates and shares give for the whole NIH set on disk (projections, not measurements): its
    training images, the child's data check and epoch on them, the float32 pixels its training cache would hold."""
    training = round(NIH_ROWS * rec["training"] / rec["images_present"])
    cache_rate = float(args.cache_rate if args.cache_rate is not None else small_data_setting("cache_rate"))
    out = {
        "full_training_projected": training,
        "full_cache_pixels_gib_projected": round(training * cache_rate * 4 * args.size**2 / GIB, 2),
        "full_store_gb_projected": round(NIH_ROWS * rec["store_bytes"] / rec["store_images"] / 1e9, 2),
        "full_validate_decode_s_projected": round(NIH_ROWS / rec["validate_decode_images_per_s"]),
    }
    if rec.get("pretrain_check_images_per_s"):
        out["full_pretrain_check_s_projected"] = round(training / rec["pretrain_check_images_per_s"])
    if rec.get("epoch_images_per_s"):
        out["full_epoch_s_projected"] = round(training / rec["epoch_images_per_s"])
    return out


def summary(rec: dict) -> str:
    text = (
        f"{rec['rows']:,} rows, {rec['patients']:,} patients, {rec['images_present']:,} PNGs of {rec['side']}^2 "
        f"written at {rec['images_per_s']:.0f}/s; datalist {rec['datalist_s']:.1f} s ({rec['training']} training, "
        f"{rec['validation']} validation, {rec['test']} test); checker {rec['validate_images_per_s']:.0f} images/s "
        f"({rec['validate_decode_images_per_s']:.0f}/s decoding, {rec['validate_headers_only_s']:.1f} s the rest); "
        f"store {rec['store_images_per_s']:.0f} images/s, {rec['store_bytes'] / 1e6:.1f} MB"
    )
    if "epoch_s" in rec:
        text += (
            f"; pre-training epoch {rec['epoch_s']:.1f} s ({rec['epoch_images_per_s']:.0f} images/s, child "
            f"{rec['pretrain_wall_s']:.0f} s), peak RSS {rec['peak_rss_gib']:.2f} GiB"
        )
    text += (
        f". Projected for all {NIH_ROWS:,} images on disk: {rec['full_training_projected']:,} training images, a "
        f"{rec['full_store_gb_projected']:.2f} GB store, {rec['full_cache_pixels_gib_projected']:.2f} GiB of cached "
        "pixels in the pre-training"
    )
    return text


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    work = args.workdir if args.workdir is not None else Path(tempfile.mkdtemp(prefix="cxr14_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    t0 = time.perf_counter()
    try:
        rec = rehearse(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rec = {
        "name": "cxr14_scale",
        "device": device_name(torch.device("cpu")),
        "cores": len(os.sched_getaffinity(0)),
        **rec,
        "total_s": round(time.perf_counter() - t0, 1),
        "parent_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3),
        "max_rss_gib": args.max_rss_gib,
        "loadavg_1m_start": round(load_start, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "workdir": str(work) if args.keep else None,
    }
    print(json.dumps(rec), flush=True)
    print(summary(rec), file=sys.stderr)
    if rec.get("peak_rss_gib", 0.0) > args.max_rss_gib:
        print(
            f"FAIL: the pre-training's peak resident memory {rec['peak_rss_gib']:.2f} GiB is over --max_rss_gib "
            f"{args.max_rss_gib} GiB",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
