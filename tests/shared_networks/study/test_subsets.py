"""The study's subsets: nested label fractions by patient, the held-out tuning split and the K folds."""

from __future__ import annotations

import pytest

from shared_networks.study.subsets import check_held_out, nested_subsets, tuning_split


def _items(n_patients: int, images_per_patient: int = 2) -> list[dict]:
    return [
        {"image": f"p{p}_{i}.png", "label": [0.0], "patient": f"P{p}"}
        for p in range(n_patients)
        for i in range(images_per_patient)
    ]


def test_nested_subsets_by_patient_seeded_and_sized():
    items = _items(10)
    subsets = nested_subsets(items, [0.1, 1.0, 0.25, 0.5], seed=3)
    assert list(subsets) == [1.0, 0.5, 0.25, 0.1]
    patients = {f: {i["patient"] for i in s} for f, s in subsets.items()}
    # 10 patients: 10, 5, round(2.5) = 3 (half up), 1; both images of each patient
    assert [len(patients[f]) for f in subsets] == [10, 5, 3, 1]
    assert [len(s) for s in subsets.values()] == [20, 10, 6, 2]
    assert patients[0.1] < patients[0.25] < patients[0.5] < patients[1.0]
    assert subsets[1.0] == items  # the items keep their order
    again = nested_subsets(items, [0.5], seed=3)[0.5]
    assert again == subsets[0.5]
    other = [{i["patient"] for i in nested_subsets(items, [0.5], seed=s)[0.5]} for s in range(4, 10)]
    assert any(o != patients[0.5] for o in other)


def test_nested_subsets_at_least_one_case_and_by_case_without_patient():
    items = [{"image": f"c{i}.nii.gz", "label": f"l{i}.nii.gz", "case": f"c{i}"} for i in range(3)]
    subsets = nested_subsets(items, [1.0, 0.1], seed=0)
    assert len(subsets[1.0]) == 3 and len(subsets[0.1]) == 1 and subsets[0.1][0] in items


@pytest.mark.parametrize("bad", [[0.0], [1.5], [-0.1], []])
def test_bad_fractions_are_refused(bad):
    with pytest.raises(ValueError):
        nested_subsets(_items(4), bad)


# tuning: held-out training patients instead of the test split


def test_tuning_split_holds_out_whole_patients_and_drops_the_test_split():
    items = _items(10)
    pretrain = [{"image": i["image"]} for i in items] + [{"image": "extra.png"}]
    datalist = {"training": items, "validation": _items(2)[:1], "test": [{"image": "t.png"}], "pretrain": pretrain}
    split = tuning_split(datalist, 0.3, seed=1)
    held = {i["patient"] for i in split["test"]}
    assert len(held) == 3 and len(split["test"]) == 6  # round(0.3 * 10) patients, both images of each
    assert {i["patient"] for i in split["training"]} == {f"P{p}" for p in range(10)} - held
    assert {"image": "t.png"} not in split["test"] and split["validation"] == datalist["validation"]
    held_images = {i["image"] for i in split["test"]}
    assert {i["image"] for i in split["pretrain"]} == {i["image"] for i in pretrain} - held_images
    assert tuning_split(datalist, 0.3, seed=1) == split
    # at least one patient stays for training; a fraction outside (0, 1) is refused
    assert len(tuning_split({"training": _items(2)}, 0.9)["training"]) == 2
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="tune_fraction"):
            tuning_split(datalist, bad)


def test_tuning_folds_partition_the_training_patients():
    items = _items(10)
    pretrain = [{"image": i["image"]} for i in items] + [{"image": "extra.png"}]
    validation = [{"image": "v.png", "label": [1.0], "patient": "V"}]
    datalist = {"training": items, "validation": validation, "test": [{"image": "t.png"}], "pretrain": pretrain}
    splits = [tuning_split(datalist, 0.0, seed=2, folds=3, fold=k) for k in range(3)]
    held = [{i["patient"] for i in s["test"]} for s in splits]
    assert sorted(len(h) for h in held) == [3, 3, 4]  # 10 patients dealt into 3 folds
    assert set().union(*held) == {f"P{p}" for p in range(10)} and sum(map(len, held)) == 10  # each patient once
    for s, h in zip(splits, held, strict=True):
        assert len(s["test"]) == 2 * len(h)  # both images of a patient
        assert {i["patient"] for i in s["training"]} == {f"P{p}" for p in range(10)} - h
        assert {"image": "t.png"} not in s["test"] and s["validation"] == datalist["validation"]
        assert {i["image"] for i in s["pretrain"]} == {i["image"] for i in pretrain} - {i["image"] for i in s["test"]}
    assert tuning_split(datalist, 0.0, seed=2, folds=3, fold=1) == splits[1]
    assert tuning_split(datalist, 0.0, seed=3, folds=3, fold=1) != splits[1]  # the seed deals other folds
    for folds, fold in ((1, 0), (3, 3), (3, -1), (11, 0)):
        with pytest.raises(ValueError, match="tune_folds"):
            tuning_split(datalist, 0.0, folds=folds, fold=fold)


def test_one_way_of_holding_patients_out_at_a_time():
    check_held_out(0.0, 3)
    check_held_out(0.3, 0)
    with pytest.raises(ValueError, match="not both"):
        check_held_out(0.3, 3)
