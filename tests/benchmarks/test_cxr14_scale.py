"""The chest X-ray scale rehearsal's synthetic NIH folder (steps 1-2 of ``benchmarks/cxr14_scale.py``, no timing): the
112,120 rows, the patient-wise split lists covering them, and the datalist of a partial download."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cxr14_scale  # noqa: E402

from shared_networks.data.cxr14 import CXR14_FINDINGS, TEST_LIST, TRAIN_VAL_LIST, cxr14_datalist  # noqa: E402


def test_nih_layout_at_full_size_and_its_partial_datalist(tmp_path):
    root = tmp_path / "nih"
    layout = cxr14_scale.write_nih_layout(root, images=12, side=256)
    with open(root / "Data_Entry_2017.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert ",".join(header) == cxr14_scale.HEADER
    assert len(rows) == layout["rows"] == 112_120
    assert {len(r) for r in rows} == {11}  # the two bracketed columns hold two values each, as in the NIH file
    names = [r[0] for r in rows]
    patient = {r[0]: r[3] for r in rows}
    assert len(set(patient.values())) == layout["patients"] == 30_805
    assert all(n == f"{int(r[3]):08d}_{int(r[2]):03d}.png" for n, r in zip(names, rows, strict=True))

    train_val = (root / TRAIN_VAL_LIST).read_text().split()
    test = (root / TEST_LIST).read_text().split()
    assert sorted(train_val + test) == sorted(names) and len(set(train_val + test)) == len(names)  # each row once
    assert not {patient[n] for n in train_val} & {patient[n] for n in test}
    assert 25_000 < len(test) <= 25_596 and len(train_val) + len(test) == 112_120

    on_disk = sorted(p.name for p in (root / "images").iterdir())
    assert on_disk == sorted(layout["present"]) and len(on_disk) == 12
    assert set(on_disk) & set(train_val) and set(on_disk) & set(test)  # spread over both lists

    datalist = cxr14_datalist(root, missing="skip")
    items = datalist["training"] + datalist["validation"] + datalist["test"]
    assert sorted(Path(i["image"]).name for i in items) == on_disk
    assert {Path(i["image"]).name for i in datalist["test"]} == set(on_disk) & set(test)
    findings = {r[0]: r[1].split("|") for r in rows}
    for item in items:
        name = Path(item["image"]).name
        assert item["label"] == [float(f in findings[name]) for f in CXR14_FINDINGS], name
        assert item["patient"] == patient[name]


def test_present_names_take_the_first_of_each_list_in_proportion():
    train_val, test = [f"a{i}" for i in range(30)], [f"b{i}" for i in range(10)]
    assert cxr14_scale.present_names(train_val, test, 8) == ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1"]
    assert cxr14_scale.present_names(train_val, test, 2) == ["a0", "b0"]
    assert len(cxr14_scale.present_names(train_val, test, 100)) == 40
