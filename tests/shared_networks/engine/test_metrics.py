"""Tests of the multi-label classification metrics and reports (:mod:`shared_networks.engine.metrics`)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import from_engine

from shared_networks.engine.metrics import (
    ClassificationReport,
    MeanROCAUC,
    mean_defined,
    roc_auc_per_class,
)

# 6 images, 4 classes: perfectly ranked, one pair of 9 right, no positive (undefined), ties
Y = torch.tensor(
    [[1, 0, 0, 1], [1, 0, 0, 0], [1, 1, 0, 1], [0, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.float
)
P = torch.tensor(
    [
        [0.9, 0.9, 0.1, 0.5],
        [0.8, 0.8, 0.2, 0.5],
        [0.7, 0.75, 0.3, 0.9],
        [0.3, 0.2, 0.4, 0.1],
        [0.2, 0.1, 0.5, 0.2],
        [0.1, 0.7, 0.6, 0.5],
    ]
)
# class 3: positives 0.5, 0.9, 0.2 vs negatives 0.5, 0.1, 0.5: pairs won (0.5: two ties + 1) + 3 + (0.2: 1) = 6 of 9
EXPECTED = [1.0, 1 / 9, None, 6 / 9]


def test_roc_auc_per_class():
    values = roc_auc_per_class(P, Y)
    assert values[2] is None
    for v, e in zip(values, EXPECTED, strict=True):
        assert v == pytest.approx(e) if e is not None else v is None
    assert roc_auc_per_class(P[:, :1], Y[:, :1]) == [1.0]
    assert roc_auc_per_class(P[:0], Y[:0]) == [None] * 4
    assert roc_auc_per_class(P, torch.ones_like(Y)) == [None] * 4
    with pytest.raises(ValueError, match="one shape"):
        roc_auc_per_class(P, Y[:, :3])


def test_mean_defined():
    assert mean_defined([0.5, None, 1.0, float("nan")]) == pytest.approx(0.75)
    assert mean_defined([None, None]) is None


def _engine(batches: list[list[dict]], handler) -> Engine:
    engine = Engine(lambda e, batch: batch)
    handler.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def _items(names: list[str], probs: torch.Tensor, labels: torch.Tensor | None) -> list[dict]:
    items = []
    for i, name in enumerate(names):
        item = {
            "image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": f"/data/images/{name}"}),
            "pred": probs[i],
        }
        if labels is not None:
            item["label"] = labels[i]
        items.append(item)
    return items


def test_mean_roc_auc_handler_skips_undefined_classes():
    items = _items([f"{i}.png" for i in range(6)], P, Y)
    handler = MeanROCAUC(output_transform=from_engine(["pred", "label"]))
    engine = Engine(lambda e, batch: batch)
    handler.attach(engine, name="auc")
    engine.run([items[:4], items[4:]], max_epochs=1)  # accumulated over two iterations
    assert engine.state.metrics["auc"] == pytest.approx((1.0 + 1 / 9 + 6 / 9) / 3)  # class 2 left out, not NaN
    no_positive = _items([f"{i}.png" for i in range(6)], P, torch.zeros_like(Y))
    engine.run([no_positive], max_epochs=1)
    assert math.isnan(engine.state.metrics["auc"])  # nothing defined: NaN (logged), never a made-up number


def test_classification_report_files(tmp_path):
    names = ["00000001_000.png", "00000002_000.png", "a,b.png", "x.png", "y.png", "z.png"]
    report = ClassificationReport(tmp_path, ["A", "B", "C", "D"])
    items = _items(names, P, Y)
    _engine([items[:3], items[3:]], report)
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "A", "B", "C", "D", "label_A", "label_B", "label_C", "label_D"]
    assert [r[0] for r in rows[1:]] == names  # the quoted comma survives
    assert [float(v) for v in rows[1][1:]] == pytest.approx(P[0].tolist() + Y[0].tolist())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_images"] == 6 and summary["n_defined"] == 3 and summary["undefined"] == ["C"]
    assert summary["per_class"]["C"] == {"auc": None, "positives": 0, "negatives": 6}
    assert summary["per_class"]["D"]["auc"] == pytest.approx(6 / 9) and summary["per_class"]["D"]["positives"] == 3
    assert summary["mean_auc"] == pytest.approx((1.0 + 1 / 9 + 6 / 9) / 3)
    assert "null" in (tmp_path / "summary.json").read_text()  # undefined is JSON null, not NaN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "summary.json"]  # no temporary files


def test_classification_report_without_labels(tmp_path):
    report = ClassificationReport(tmp_path, ["A", "B", "C", "D"], csv_name="probabilities.csv", summary_name=None)
    _engine([_items(["p.png", "q.dcm"], P[:2], None)], report)
    rows = (tmp_path / "probabilities.csv").read_text().splitlines()
    assert rows[0] == "image,A,B,C,D" and [r.split(",")[0] for r in rows[1:]] == ["p.png", "q.dcm"]
    # every probability written with the digits of its float32 value: it reads back exactly (6 decimals made ties of
    # a barely trained model's scores near 0.5, and the AUC read from the file then differed from summary.json's)
    written = np.array([[np.float32(v) for v in r.split(",")[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(written, P[:2].numpy())
    assert report.summary is None and not (tmp_path / "summary.json").exists()


def test_classification_report_checks_the_class_count(tmp_path):
    report = ClassificationReport(tmp_path, ["A", "B"])
    with pytest.raises(ValueError, match="4 values for 2 classes"):
        _engine([_items(["p.png"], P[:1], Y[:1])], report)


RANK_WORKER = """
import json, sys
import torch, torch.distributed as dist
from ignite.engine import Engine
from monai.handlers import from_engine
from shared_networks.engine.metrics import MeanROCAUC

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
probs, labels = torch.tensor(json.loads(sys.argv[1])), torch.tensor(json.loads(sys.argv[2]))
items = [{"pred": probs[i], "label": labels[i]} for i in range(rank, len(probs), world)]  # this rank's share
engine = Engine(lambda e, batch: batch)
MeanROCAUC(output_transform=from_engine(["pred", "label"])).attach(engine, name="auc")
engine.run([items[:1], items[1:]], max_epochs=1)
with open(f"{sys.argv[3]}/rank{rank}.json", "w") as f:
    json.dump(engine.state.metrics["auc"], f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_mean_roc_auc_gathers_all_ranks(tmp_path):
    """On 2 processes (torchrun, gloo), each evaluating its share of 5 images (3 and 2), both ranks get the mean AUC
    of all 5 images, not of their own share."""
    probs, labels = P[:5], Y[:5]
    expected = mean_defined(roc_auc_per_class(probs, labels))
    own = [mean_defined(roc_auc_per_class(probs[r::2], labels[r::2])) for r in range(2)]
    assert all(o is None or abs(o - expected) > 0.05 for o in own)  # a metric that did not gather would differ
    script = tmp_path / "worker.py"
    script.write_text(RANK_WORKER)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        json.dumps(probs.tolist()),
        json.dumps(labels.tolist()),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    values = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert values == pytest.approx([expected, expected])
