"""The label-efficiency study of each bundle, end to end on phantoms: ``python -m shared_networks.cli.study`` with
``quick.yaml``, one epoch, one seed and two fractions, then a second call that runs nothing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from shared_networks.study import VERDICTS
from shared_networks.synthetic.brain import write_msd_phantom_dataset
from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

REPO = Path(__file__).resolve().parents[2]


def quick(fractions: str = "1,0.5") -> list[str]:
    """quick.yaml, one epoch without warmup (its steps move the weights), one seed, the fractions."""
    return [
        "--config_overrides",
        "quick",
        "--fractions",
        fractions,
        "--seeds",
        "0",
        "--n_resamples",
        "200",
        "--extra",
        "--max_epochs 1 --warmup_epochs 0 --num_workers 0",
    ]


PHANTOMS = {
    "btcv_mae_segmentation": lambda d: write_btcv_phantom_dataset(d, num_cases=5, seed=3),
    "brats_mae_segmentation": lambda d: write_msd_phantom_dataset(
        d, num_cases=5, num_unlabelled=1, seed=3, shape=(56, 64, 48), spacing=(3.0, 3.0, 3.0)
    ),
    "cxr14_mae_classification": lambda d: write_cxr14_phantom_dataset(d, num_patients=24, size=64, seed=3),
}
METRIC = {"btcv_mae_segmentation": "dice", "brats_mae_segmentation": "dice", "cxr14_mae_classification": "auc"}


def study(bundle: str, data: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "shared_networks.cli.study",
        "--bundle_root",
        str(REPO / "bundles" / bundle),
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out),
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def check_outputs(out: Path, bundle: str, arms: list[str], fractions: list[str]) -> dict:
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted((r["arm"], r["fraction"]) for r in rows) == sorted((a, f) for a in arms for f in fractions)
    metric = METRIC[bundle]
    assert all(r["status"] == "finished" and r[metric] != "" and Path(r["evaluation"]).is_file() for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == metric and summary["n_resamples"] == 200 and set(summary["fractions"]) == set(fractions)
    for f in fractions:
        entry = summary["fractions"][f]
        assert set(entry["arms"]) == set(arms)
        assert all(entry["arms"][a][metric]["per_seed"] for a in arms)
        for comparison in entry["comparisons"].values():
            mean = comparison[metric]["mean"]
            assert len(mean["ci95"]) == 2 and comparison["verdict"] in VERDICTS
            assert set(comparison[metric]["per_class"]) == set(summary["class_names"])
    with Image.open(out / "label_efficiency.png") as png:
        png.load()
        assert png.size[0] > 0
    assert "## Study: MAE against scratch" in (out / "study.md").read_text()
    assert "<section" in (out / "study.html").read_text()
    if len(fractions) < 2:
        return summary
    # nested subsets, test split unchanged
    lists = {f: json.loads((out / "datalists" / f"fraction{f}.json").read_text()) for f in fractions}
    images = {
        f: [i["image"] if isinstance(i["image"], str) else i["image"][0] for i in d["training"]]
        for f, d in lists.items()
    }
    assert set(images["0.5"]) < set(images["1"])
    assert lists["0.5"]["test"] == lists["1"]["test"] and lists["0.5"]["validation"] == lists["1"]["validation"]
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"])
def test_study_end_to_end_then_resume(bundle, tmp_path):
    data = PHANTOMS[bundle](tmp_path / "data")
    out = tmp_path / "study"
    arms = ["mae", "scratch"]
    first = study(bundle, data, out, *quick(), "--arms", ",".join(arms))
    assert "run 4/4: scratch fraction 0.5 seed 0" in first.stderr and "study finished" in first.stderr
    summary = check_outputs(out, bundle, arms, ["1", "0.5"])
    mae = out / "pretrain" / "models" / "mae.pt"
    assert summary["runs_this_call"] == 4 and mae.is_file()
    runs = out / "runs"
    for f in ("1", "0.5"):  # the MAE arm fine-tunes from the study's checkpoint, the baseline from nothing
        assert f"pre-trained encoder from {mae}: " in (runs / f"fraction{f}_seed0_mae" / "train.log").read_text()
        assert "no pre-trained checkpoint given" in (runs / f"fraction{f}_seed0_scratch" / "train.log").read_text()
    if bundle == "cxr14_mae_classification":
        probabilities = [(runs / f"fraction1_seed0_{a}" / "evaluate" / "predictions.csv").read_text() for a in arms]
        assert probabilities[0] != probabilities[1]

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/evaluate/*")}
    second = study(bundle, data, out, *quick(), "--arms", ",".join(arms))
    assert json.loads((out / "summary.json").read_text())["runs_this_call"] == 0
    assert second.stderr.count("finished before, kept") == 4 and "pre-training already finished" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/evaluate/*")} == stamps

    if bundle == "cxr14_mae_classification":  # the linear probes, on the MAE checkpoint of the first study
        probe = tmp_path / "probe"
        study(bundle, data, probe, *quick("0.5"), "--arms", "probe_mae,probe_random", "--mae_ckpt", str(mae))
        summary = check_outputs(probe, bundle, ["probe_mae", "probe_random"], ["0.5"])
        assert list(summary["fractions"]["0.5"]["comparisons"]) == ["probe_mae - probe_random"]
        assert not (probe / "pretrain").exists()
        text = {
            a: (probe / "runs" / f"fraction0.5_seed0_{a}" / "train.log").read_text()
            for a in ("probe_mae", "probe_random")
        }
        assert f"pre-trained encoder from {mae}: " in text["probe_mae"]
        assert "no pre-trained checkpoint given" in text["probe_random"]
