"""K-fold cross-validation with a fake runner: one study per fold, pooled held-out predictions, each fold's MAE."""

from __future__ import annotations

import csv
import json

import pytest

from shared_networks.study.crossval import run_folds


def test_cross_validated_study_pools_the_folds_and_never_passes_the_test_split(tmp_path, fake_bundle, fold_runner):
    bundle = fake_bundle(tmp_path / "bundle")
    out = tmp_path / "cv"
    runner = fold_runner()
    kwargs = dict(fractions=1, seeds=0, n_resamples=50)
    summary = run_folds(bundle, "/d", out, 3, runner=runner, **kwargs)
    assert len(runner.calls) == 3 * (1 + 2 * 2)  # per fold: its own pre-training, then 2 arms x (train + evaluate)
    tests = []
    for k in range(3):
        for name in ("fraction1.json", "full.json"):
            datalist = json.loads((out / f"fold{k}" / "datalists" / name).read_text())
            images = [i["image"] for key in datalist for i in datalist[key]]
            assert not {"/d/img10.nii.gz", "/d/img11.nii.gz"} & set(images)  # the real test cases
            held = {i["image"] for i in datalist["test"]}
            assert not held & {i["image"] for i in datalist["pretrain"]} and not held & set(
                i["image"] for i in datalist["training"]
            )
        tests += [i["case"] for i in datalist["test"]]
        assert json.loads((out / f"fold{k}" / "summary.json").read_text())["tune_fold"] == k
    assert sorted(tests) == [f"c{i}" for i in range(8)]  # every training case held out once
    # pooled: 8 cases; per case the class-mean difference is 0.01 i / 2, so the mean is 0.0175
    assert summary["n_test"] == 8 and summary["tune_folds"] == 3 and len(summary["folds"]) == 3
    diff = summary["fractions"]["1"]["comparisons"]["mae - scratch"]["dice"]["mean"]
    assert diff["difference"] == pytest.approx(0.0175)
    assert 0.0 <= diff["ci95"][0] <= 0.0175 <= diff["ci95"][1] <= 0.035
    assert summary["fractions"]["1"]["n_train"] == 5  # 8 - 3, 8 - 3, 8 - 2 training cases: mean 5.33
    assert "pooled over 3 folds" in (out / "study.md").read_text()
    assert "pooled over 3 folds" in (out / "study.html").read_text()
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted((r["fold"], r["arm"]) for r in rows) == [(str(k), a) for k in range(3) for a in ("mae", "scratch")]

    again = fold_runner()
    assert run_folds(bundle, "/d", out, 3, runner=again, **kwargs)["n_test"] == 8
    assert again.calls == []  # resumed: every fold finished
    more = fold_runner()
    assert run_folds(bundle, "/d", out, 3, runner=more, **{**kwargs, "seeds": "0,1"})["fractions"]["1"]["arms"]["mae"][
        "seeds"
    ] == [0, 1]
    assert len(more.calls) == 3 * 2 * 2  # seed 1's runs only, in each fold
    back = run_folds(bundle, "/d", out, 3, runner=fold_runner(), **kwargs)  # the pooled summary of this call's seeds
    assert back["fractions"]["1"]["arms"]["mae"]["seeds"] == [0] and back["n_test"] == 8


def test_cross_validation_takes_each_folds_own_mae(tmp_path, fake_bundle, fold_runner):
    bundle = fake_bundle(tmp_path / "bundle")
    with pytest.raises(ValueError, match="{fold}"):  # one checkpoint would have seen held-out patients
        run_folds(
            bundle,
            "/d",
            tmp_path / "a",
            2,
            runner=fold_runner(),
            seeds=0,
            fractions=1,
            mae_ckpt=str(tmp_path / "mae.pt"),
        )
    with pytest.raises(ValueError, match="not both"):
        run_folds(bundle, "/d", tmp_path / "b", 2, runner=fold_runner(), seeds=0, fractions=1, tune_fraction=0.3)
    with pytest.raises(ValueError, match="at least 2"):
        run_folds(bundle, "/d", tmp_path / "c", 1, runner=fold_runner(), seeds=0, fractions=1)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))  # refused before any fold starts
    for k in range(2):
        (tmp_path / f"mae{k}.pt").write_text("given")
    runner = fold_runner()
    run_folds(
        bundle,
        "/d",
        tmp_path / "c",
        2,
        runner=runner,
        seeds=0,
        fractions=1,
        n_resamples=20,
        mae_ckpt=str(tmp_path / "mae{fold}.pt"),
    )
    used = [c[c.index("--pretrained_ckpt") + 1] for c in runner.calls if "--pretrained_ckpt" in c]
    assert used == [str(tmp_path / "mae0.pt"), "none", str(tmp_path / "mae1.pt"), "none"]  # no pre-training run
