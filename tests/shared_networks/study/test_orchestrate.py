"""One study with a fake runner: what runs, what is written, what a second call skips, and the held-out tuning split."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from shared_networks.study.orchestrate import run_study


def test_study_runs_every_arm_then_resumes_without_redoing(tmp_path, fake_bundle, fake_runner):
    bundle = fake_bundle(tmp_path / "bundle")
    out = tmp_path / "study"
    runner = fake_runner()
    kwargs = dict(fractions="1,0.5", seeds=(0, 1), config_overrides="quick", extra="--max_epochs 1", n_resamples=100)
    summary = run_study(bundle, "/d", out, runner=runner, **kwargs)
    # 1 pre-training + 2 fractions x 2 seeds x 2 arms x (train + evaluate)
    assert len(runner.calls) == 1 + 2 * 2 * 2 * 2
    train = [c for c in runner.calls if "/train.yaml'" in c[1] and "evaluate.yaml" not in c[1]]
    mae = str(out / "pretrain" / "models" / "mae.pt")
    assert sorted(c[c.index("--pretrained_ckpt") + 1] for c in train) == sorted(["none"] * 4 + [mae] * 4)
    assert all("quick.yaml" in c[1] and c[-2:] == ["--max_epochs", "1"] for c in runner.calls)
    half = json.loads((out / "datalists" / "fraction0.5.json").read_text())
    full = json.loads((out / "datalists" / "fraction1.json").read_text())
    assert len(half["training"]) == 4 and len(full["training"]) == 8 and half["test"] == full["test"]
    assert all(i in full["training"] for i in half["training"]) and half["validation"] == full["validation"]

    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(rows) == 8 and {r["arm"] for r in rows} == {"mae", "scratch"}
    assert {(r["fraction"], r["n_train"]) for r in rows} == {("1", "8"), ("0.5", "4")}
    assert all(r["status"] == "finished" and float(r["dice"]) > 0 for r in rows)
    comparison = summary["fractions"]["0.5"]["comparisons"]["mae - scratch"]
    assert comparison["dice"]["mean"]["difference"] == pytest.approx(0.2)
    assert comparison["dice"]["mean"]["ci95"] == pytest.approx([0.2, 0.2])
    assert comparison["verdict"] == "MAE ahead"
    # mean over classes per seed: (0.5 + 0.025 + 0.001 s + 0.4) / 2 for scratch
    scratch = summary["fractions"]["1"]["arms"]["scratch"]["dice"]
    assert scratch["per_seed"] == pytest.approx([0.4625, 0.4630]) and scratch["sd"] == pytest.approx(0.0005 / 2**0.5)
    assert json.loads((out / "summary.json").read_text())["n_resamples"] == 100
    assert Image.open(out / "label_efficiency.png").size == (1000, 480)
    assert "MAE ahead" in (out / "study.md").read_text() and "<section" in (out / "study.html").read_text()
    assert "only 6 test case(s)" in summary["notes"][0]

    again = fake_runner()
    run_study(bundle, "/d", out, runner=again, **kwargs)
    assert again.calls == []
    more = fake_runner()
    run_study(bundle, "/d", out, runner=more, **{**kwargs, "seeds": (0, 1, 2)})
    assert len(more.calls) == 2 * 2 * 2  # only seed 2's runs
    with pytest.raises(ValueError, match="study.json"):
        run_study(bundle, "/d", out, runner=fake_runner(), **{**kwargs, "subset_seed": 5})


def test_a_failed_command_keeps_finished_runs_and_is_redone(tmp_path, fake_bundle, fake_runner):
    bundle = fake_bundle(tmp_path / "bundle", probe=True)
    out = tmp_path / "study"
    kwargs = dict(fractions=1.0, seeds=0, n_resamples=50, mae_ckpt=str(tmp_path / "mae.pt"))
    (tmp_path / "mae.pt").write_text("given")
    failing = fake_runner(fail_at=6)  # the evaluation of the third run (no pre-training: a checkpoint is given)
    with pytest.raises(RuntimeError, match="evaluate.log"):
        run_study(bundle, "/d", out, runner=failing, **kwargs)
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["arm"] for r in rows] == ["mae", "scratch"]
    resumed = fake_runner()
    summary = run_study(bundle, "/d", out, runner=resumed, **kwargs)
    assert len(resumed.calls) == 4  # probe_mae again from its training, then probe_random
    assert sorted(summary["fractions"]["1"]["comparisons"]) == ["mae - scratch", "probe_mae - probe_random"]
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 4


def test_arms_are_checked_against_the_bundle(tmp_path, fake_bundle, fake_runner):
    bundle = fake_bundle(tmp_path / "bundle")  # no linear_probe.yaml
    with pytest.raises(ValueError, match="probe_mae"):
        run_study(bundle, "/d", tmp_path / "a", arms="mae,probe_mae", runner=fake_runner())
    with pytest.raises(ValueError, match="mea"):
        run_study(bundle, "/d", tmp_path / "b", arms="mea", runner=fake_runner())
    runner = fake_runner()
    summary = run_study(bundle, "/d", tmp_path / "c", arms="scratch", fractions=1, seeds=0, runner=runner)
    assert len(runner.calls) == 2  # no pre-training: no arm needs it
    assert [c[c.index("--pretrained_ckpt") + 1] for c in runner.calls if "--pretrained_ckpt" in c] == ["none"]
    assert summary["fractions"]["1"]["comparisons"] == {}  # nothing to compare with one arm


def test_study_with_tune_fraction_never_passes_the_test_split(tmp_path, fake_bundle, fake_runner):
    bundle = fake_bundle(tmp_path / "bundle")
    out = tmp_path / "study"
    summary = run_study(
        bundle, "/d", out, runner=fake_runner(), fractions=1, seeds=0, n_resamples=20, tune_fraction=0.25
    )
    for name in ("fraction1.json", "full.json"):
        datalist = json.loads((out / "datalists" / name).read_text())
        images = [i["image"] for k in datalist for i in datalist[k]]
        assert not {"/d/img10.nii.gz", "/d/img11.nii.gz"} & set(images)  # the real test cases
        assert len(datalist["test"]) == 2 and len(datalist["training"]) == 6  # round(0.25 * 8) cases held out
        assert not {i["image"] for i in datalist["test"]} & {i["image"] for i in datalist["pretrain"]}
    assert summary["tune_fraction"] == 0.25
    assert "Held-out training patients" in (out / "study.md").read_text()
    with pytest.raises(ValueError, match="tune_fraction"):  # the recorded settings differ
        run_study(bundle, "/d", out, runner=fake_runner(), fractions=1, seeds=0, n_resamples=20)


def test_one_study_runs_one_fold_and_leaves_every_fold_to_the_driver(tmp_path, fake_bundle, fold_runner):
    bundle = fake_bundle(tmp_path / "bundle")
    with pytest.raises(ValueError, match="run_folds"):  # no call back up to the cross-validation driver
        run_study(bundle, "/d", tmp_path / "a", runner=fold_runner(), seeds=0, fractions=1, tune_folds=3)
    assert not (tmp_path / "a").exists()
    summary = run_study(
        bundle,
        "/d",
        tmp_path / "b",
        runner=fold_runner(),
        seeds=0,
        fractions=1,
        n_resamples=20,
        tune_folds=3,
        tune_fold=1,
    )
    assert summary["tune_folds"] == 3 and summary["tune_fold"] == 1
    assert "fold 1 of 3" in (tmp_path / "b" / "study.md").read_text()
