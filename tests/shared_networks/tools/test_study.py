"""The label-efficiency study: subsets, bootstrap arithmetic, verdicts, evaluation files, resuming (a fake runner)."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared_networks.cli.study import fire_argv
from shared_networks.tools.study import (
    auc_by_group,
    auc_resampled,
    bootstrap_counts,
    counts_from_indices,
    mean_resampled,
    nested_subsets,
    paired_bootstrap,
    parse_overrides,
    pool_evaluations,
    read_per_case,
    read_predictions,
    run_study,
    subprocess_runner,
    tuning_split,
    verdict,
)

# subsets


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


# bootstrap arithmetic


def test_counts_from_indices():
    counts = counts_from_indices(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_constant_paired_difference_collapses_the_ci():
    rng = np.random.default_rng(0)
    b = rng.random((7, 2))
    result = paired_bootstrap(b + 0.1, b, ["x", "y"], "mean", n_resamples=200, seed=1)
    mean = result["mean"]
    assert mean["difference"] == pytest.approx(0.1)
    assert mean["ci95"] == pytest.approx([0.1, 0.1])
    assert mean["n_resamples"] == 200 and mean["verdict"] == "MAE ahead"
    assert result["per_class"]["y"]["ci95"] == pytest.approx([0.1, 0.1])


def test_fixed_resample_set_by_hand():
    a = np.array([[1.0], [0.0], [0.5]])
    b = np.zeros((3, 1))
    counts = counts_from_indices(np.array([[0, 0, 1], [1, 2, 2], [0, 1, 2]]), 3)
    result = paired_bootstrap(a, b, ["x"], "mean", counts=counts)
    # resample means 2/3, 1/3, 1/2; numpy's linear percentiles at 2.5 % and 97.5 % of 3 values
    assert result["mean"]["difference"] == pytest.approx(0.5)
    assert result["mean"]["ci95"] == pytest.approx([1 / 3 + 0.05 / 6, 1 / 2 + 0.95 / 6])
    assert result["arms"]["a"]["value"] == pytest.approx(0.5) and result["arms"]["b"]["value"] == 0.0


def test_undefined_values_are_left_out_pairwise_and_per_resample():
    # class y is defined only in case 2; case 1's x is missing in arm b (left out of both arms)
    a = np.array([[0.9, np.nan], [0.8, np.nan], [0.7, 0.6]])
    b = np.array([[0.5, np.nan], [np.nan, np.nan], [0.3, 0.2]])
    counts = counts_from_indices(np.array([[0, 0, 1], [2, 2, 2]]), 3)
    result = paired_bootstrap(a, b, ["x", "y"], "mean", counts=counts)
    # all cases: x = mean(0.9, 0.7) - mean(0.5, 0.3) = 0.4; y = 0.4; mean over classes 0.4
    assert result["per_class"]["x"]["difference"] == pytest.approx(0.4)
    assert result["mean"]["difference"] == pytest.approx(0.4)
    # resample 1 draws no case defining y: y skipped there (1 resample used), the mean is x alone
    assert result["per_class"]["y"]["n_resamples"] == 1
    assert result["per_class"]["y"]["ci95"] == pytest.approx([0.4, 0.4])
    assert result["mean"]["n_resamples"] == 2


def test_mean_resampled_weights_repeated_cases():
    values = np.array([[1.0], [3.0]])
    assert mean_resampled(values, np.array([[3, 1]]))[0, 0] == pytest.approx(1.5)


def test_auc_by_hand_with_weights_ties_and_undefined():
    scores = np.array([[0.1, 0.5, 0.2], [0.4, 0.5, 0.3], [0.35, 0.9, 0.4], [0.8, 0.1, 0.5]])
    labels = np.array([[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]])
    auc = auc_resampled(scores, labels, np.array([[1, 1, 1, 1], [2, 1, 1, 1]]))
    # class 0: 3 of 4 positive-negative pairs ordered (0.35 < 0.4); with case 0 drawn twice: 5 of 6
    assert auc[0, 0] == pytest.approx(0.75) and auc[1, 0] == pytest.approx(5 / 6)
    # class 1: positives 0.5, 0.9 against negatives 0.5, 0.1: (0.5 + 1) + (1 + 1) of 4 pairs; the tie counts a half
    assert auc[0, 1] == pytest.approx(3.5 / 4)
    assert np.isnan(auc[:, 2]).all()  # no positive


def test_auc_bootstrap_skips_classes_undefined_on_a_resample():
    scores_a = np.array([[0.9], [0.1], [0.8]])
    scores_b = np.array([[0.2], [0.6], [0.8]])
    labels = np.array([[1], [0], [0]])
    counts = counts_from_indices(np.array([[0, 1, 2], [1, 1, 2], [0, 1, 1]]), 3)
    result = paired_bootstrap(scores_a, scores_b, ["x"], "auc", labels=labels, counts=counts)
    # all images: a's positive above both negatives (AUC 1), b's below both (AUC 0)
    assert result["mean"]["difference"] == pytest.approx(1.0)
    assert result["per_class"]["x"]["n_resamples"] == 2  # resample 2 has no positive
    assert result["mean"]["ci95"] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize(
    "ci, higher, expected",
    [
        ([0.01, 0.2], True, "MAE ahead"),
        ([-0.3, -0.05], True, "scratch ahead"),
        ([-0.1, 0.1], True, "difference within noise (CI contains 0)"),
        ([0.0, 0.1], True, "difference within noise (CI contains 0)"),
        ([-4.0, -1.0], False, "MAE ahead"),  # HD95: lower is better
        ([1.0, 4.0], False, "scratch ahead"),
        ([None, None], True, "difference within noise (CI contains 0)"),
    ],
)
def test_verdicts(ci, higher, expected):
    assert verdict(ci, higher) == expected


# evaluation files


def test_read_per_case_by_column_names_with_summary_classes(tmp_path):
    (tmp_path / "per_case.csv").write_text(
        "case,hd95_right_kidney,dice_spleen,dice_right_kidney,dice_n_missed,hd95_spleen\n"
        "a.nii.gz,3.5,0.9,nan,4,inf\n"
        "b.nii.gz,,0.5,0.25,0,2\n"
    )
    summary = {"dice": {"per_class": {"spleen": {}, "right kidney": {}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    ev = read_per_case(tmp_path / "per_case.csv")
    assert ev.cases == ["a.nii.gz", "b.nii.gz"] and ev.class_names == ["spleen", "right_kidney"]
    np.testing.assert_array_equal(ev.values["dice"], [[0.9, np.nan], [0.5, 0.25]])
    np.testing.assert_array_equal(ev.values["hd95"], [[np.nan, 3.5], [2.0, np.nan]])


def test_read_per_case_without_hd95_and_without_dice(tmp_path):
    (tmp_path / "per_case.csv").write_text("case,dice_TC,dice_WT\nx,1,0.5\n")
    assert set(read_per_case(tmp_path / "per_case.csv").values) == {"dice"}
    (tmp_path / "per_case.csv").write_text("case,hd95_TC\nx,1\n")
    with pytest.raises(ValueError, match="per_case.csv"):
        read_per_case(tmp_path / "per_case.csv")


def test_read_predictions(tmp_path):
    (tmp_path / "predictions.csv").write_text("image,A,B,label_A,label_B\ni1.png,0.2,0.7,0,1\ni2.png,0.9,0.1,1,0\n")
    ev = read_predictions(tmp_path / "predictions.csv")
    assert ev.class_names == ["A", "B"] and ev.cases == ["i1.png", "i2.png"]
    np.testing.assert_array_equal(ev.labels, [[0, 1], [1, 0]])
    (tmp_path / "predictions.csv").write_text("image,A,label_A\ni1.png,x,0\n")
    with pytest.raises(ValueError, match="predictions.csv"):
        read_predictions(tmp_path / "predictions.csv")


def test_overrides_and_fire_arguments():
    assert parse_overrides("--max_epochs 2 --train#trainer#max_epochs 3") == [
        "--max_epochs", "2", "--train#trainer#max_epochs", "3",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="pairs"):
        parse_overrides("--max_epochs")
    assert fire_argv(["--extra", "--max_epochs 1", "--seeds", "0"]) == ["--extra=--max_epochs 1", "--seeds", "0"]


# the study with a fake runner: what runs, what is written, what a second call skips

TEST_CASES = [f"case{i}" for i in range(6)]


def _fake_bundle(root: Path, probe: bool = False) -> Path:
    configs = root / "configs"
    configs.mkdir(parents=True)
    items = [{"image": f"/d/img{i}.nii.gz", "label": f"/d/lab{i}.nii.gz", "case": f"c{i}"} for i in range(12)]
    datalist = {"training": items[:8], "validation": items[8:10], "test": items[10:], "pretrain": items[:8]}
    (configs / "train.yaml").write_text(f"dataset_dir: /d\nbundle_root: .\ndatalist: {json.dumps(datalist)}\n")
    for name in ("pretrain", "evaluate") + (("linear_probe",) if probe else ()):
        (configs / f"{name}.yaml").write_text("max_epochs: 1\n")
    (configs / "quick.yaml").write_text("max_epochs: 1\n")
    return root


class FakeRunner:
    """Writes what each workflow would (mae.pt, model.pt, per_case.csv); MAE runs score 0.2 above scratch."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, args, log_file: Path) -> None:
        args = list(args)
        self.calls.append(args)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(shlex.join(args))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError(f"command failed; its output is in '{log_file}'")
        get = {args[i]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("--")}
        ckpt, out = Path(get["--ckpt_dir"]), Path(get["--output_dir"])
        ckpt.mkdir(parents=True, exist_ok=True)
        if "pretrain.yaml" in get["--config_file"]:
            (ckpt / "mae.pt").write_text("mae")
        elif "evaluate.yaml" in get["--config_file"]:
            out.mkdir(parents=True, exist_ok=True)
            arm_bonus = 0.2 if out.parent.name.endswith("_mae") else 0.0
            seed = int(get["--seed"])
            rows = ["case,dice_a,dice_b"] + [
                f"{c},{0.5 + arm_bonus + 0.01 * i + 0.001 * seed},{0.4 + arm_bonus}" for i, c in enumerate(TEST_CASES)
            ]
            (out / "per_case.csv").write_text("\n".join(rows) + "\n")
        else:
            name = "linear_probe.pt" if "linear_probe.yaml" in get["--config_file"] else "model.pt"
            (ckpt / name).write_text(get["--pretrained_ckpt"])


def test_study_runs_every_arm_then_resumes_without_redoing(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    out = tmp_path / "study"
    runner = FakeRunner()
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

    again = FakeRunner()
    run_study(bundle, "/d", out, runner=again, **kwargs)
    assert again.calls == []
    more = FakeRunner()
    run_study(bundle, "/d", out, runner=more, **{**kwargs, "seeds": (0, 1, 2)})
    assert len(more.calls) == 2 * 2 * 2  # only seed 2's runs
    with pytest.raises(ValueError, match="study.json"):
        run_study(bundle, "/d", out, runner=FakeRunner(), **{**kwargs, "subset_seed": 5})


def test_a_failed_command_keeps_finished_runs_and_is_redone(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle", probe=True)
    out = tmp_path / "study"
    kwargs = dict(fractions=1.0, seeds=0, n_resamples=50, mae_ckpt=str(tmp_path / "mae.pt"))
    (tmp_path / "mae.pt").write_text("given")
    failing = FakeRunner(fail_at=6)  # the evaluation of the third run (no pre-training: a checkpoint is given)
    with pytest.raises(RuntimeError, match="evaluate.log"):
        run_study(bundle, "/d", out, runner=failing, **kwargs)
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["arm"] for r in rows] == ["mae", "scratch"]
    resumed = FakeRunner()
    summary = run_study(bundle, "/d", out, runner=resumed, **kwargs)
    assert len(resumed.calls) == 4  # probe_mae again from its training, then probe_random
    assert sorted(summary["fractions"]["1"]["comparisons"]) == ["mae - scratch", "probe_mae - probe_random"]
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 4


def test_arms_are_checked_against_the_bundle(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")  # no linear_probe.yaml
    with pytest.raises(ValueError, match="probe_mae"):
        run_study(bundle, "/d", tmp_path / "a", arms="mae,probe_mae", runner=FakeRunner())
    with pytest.raises(ValueError, match="mea"):
        run_study(bundle, "/d", tmp_path / "b", arms="mea", runner=FakeRunner())
    runner = FakeRunner()
    summary = run_study(bundle, "/d", tmp_path / "c", arms="scratch", fractions=1, seeds=0, runner=runner)
    assert len(runner.calls) == 2  # no pre-training: no arm needs it
    assert [c[c.index("--pretrained_ckpt") + 1] for c in runner.calls if "--pretrained_ckpt" in c] == ["none"]
    assert summary["fractions"]["1"]["comparisons"] == {}  # nothing to compare with one arm


@pytest.mark.slow  # starts python -m monai.bundle
def test_a_failing_bundle_command_names_its_log(tmp_path):
    log = tmp_path / "run" / "train.log"
    with pytest.raises(RuntimeError, match="train.log") as failure:
        subprocess_runner(["--config_file", str(tmp_path / "absent.yaml")], log)
    assert "exit" in str(failure.value) and "absent.yaml" in log.read_text()


def test_the_report_shows_the_study(tmp_path):
    from shared_networks.tools.report import study_fragment

    bundle = _fake_bundle(tmp_path / "bundle")
    out = tmp_path / "study"
    run_study(bundle, "/d", out, runner=FakeRunner(), fractions="1,0.5", seeds=0, n_resamples=50)
    files_dir, copies = tmp_path / "report_files", []
    fragment = study_fragment(out, files_dir, "ct", copies)
    assert copies == [(out / "label_efficiency.png", files_dir / "ct_label_efficiency.png")]
    assert 'src="report_files/ct_label_efficiency.png"' in fragment and 'src="label_efficiency.png"' not in fragment
    assert '<section id="ct-study">' in fragment and "<h3>Study: MAE against scratch</h3>" in fragment
    assert "<h2>" not in fragment
    with pytest.raises(ValueError, match="no study.html"):
        study_fragment(tmp_path / "nothing", files_dir, "ct", [])


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


def test_study_with_tune_fraction_never_passes_the_test_split(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    out = tmp_path / "study"
    summary = run_study(bundle, "/d", out, runner=FakeRunner(), fractions=1, seeds=0, n_resamples=20,
                        tune_fraction=0.25)  # fmt: skip
    for name in ("fraction1.json", "full.json"):
        datalist = json.loads((out / "datalists" / name).read_text())
        images = [i["image"] for k in datalist for i in datalist[k]]
        assert not {"/d/img10.nii.gz", "/d/img11.nii.gz"} & set(images)  # the real test cases
        assert len(datalist["test"]) == 2 and len(datalist["training"]) == 6  # round(0.25 * 8) cases held out
        assert not {i["image"] for i in datalist["test"]} & {i["image"] for i in datalist["pretrain"]}
    assert summary["tune_fraction"] == 0.25
    assert "Held-out training patients" in (out / "study.md").read_text()
    with pytest.raises(ValueError, match="tune_fraction"):  # the recorded settings differ
        run_study(bundle, "/d", out, runner=FakeRunner(), fractions=1, seeds=0, n_resamples=20)


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


class FoldRunner(FakeRunner):
    """Evaluates the cases of the datalist's test list: MAE 0.5 + 0.01 i on class a (case c<i>), scratch 0.5; both
    0.4 on class b."""

    def __call__(self, args, log_file: Path) -> None:
        super().__call__(args, log_file)
        get = {args[i]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("--")}
        if "evaluate.yaml" in get["--config_file"]:
            test = json.loads(Path(get["--datalist_file"]).read_text())["test"]
            out = Path(get["--output_dir"])
            mae = out.parent.name.endswith("_mae")
            rows = ["case,dice_a,dice_b"] + [
                f"{i['case']},{0.5 + (0.01 * int(i['case'][1:]) if mae else 0.0)},0.4" for i in test
            ]
            (out / "per_case.csv").write_text("\n".join(rows) + "\n")


def test_cross_validated_study_pools_the_folds_and_never_passes_the_test_split(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    out = tmp_path / "cv"
    runner = FoldRunner()
    kwargs = dict(fractions=1, seeds=0, n_resamples=50, tune_folds=3)
    summary = run_study(bundle, "/d", out, runner=runner, **kwargs)
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

    again = FoldRunner()
    assert run_study(bundle, "/d", out, runner=again, **kwargs)["n_test"] == 8
    assert again.calls == []  # resumed: every fold finished
    more = FoldRunner()
    assert run_study(bundle, "/d", out, runner=more, **{**kwargs, "seeds": "0,1"})["fractions"]["1"]["arms"]["mae"][
        "seeds"
    ] == [0, 1]
    assert len(more.calls) == 3 * 2 * 2  # seed 1's runs only, in each fold
    back = run_study(bundle, "/d", out, runner=FoldRunner(), **kwargs)  # the pooled summary of this call's seeds
    assert back["fractions"]["1"]["arms"]["mae"]["seeds"] == [0] and back["n_test"] == 8


def test_cross_validation_takes_each_folds_own_mae(tmp_path):
    bundle = _fake_bundle(tmp_path / "bundle")
    with pytest.raises(ValueError, match="{fold}"):  # one checkpoint would have seen held-out patients
        run_study(bundle, "/d", tmp_path / "a", runner=FoldRunner(), seeds=0, fractions=1, tune_folds=2,
                  mae_ckpt=str(tmp_path / "mae.pt"))  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        run_study(bundle, "/d", tmp_path / "b", runner=FoldRunner(), seeds=0, fractions=1, tune_folds=2,
                  tune_fraction=0.3)  # fmt: skip
    for k in range(2):
        (tmp_path / f"mae{k}.pt").write_text("given")
    runner = FoldRunner()
    run_study(bundle, "/d", tmp_path / "c", runner=runner, seeds=0, fractions=1, tune_folds=2, n_resamples=20,
              mae_ckpt=str(tmp_path / "mae{fold}.pt"))  # fmt: skip
    used = [c[c.index("--pretrained_ckpt") + 1] for c in runner.calls if "--pretrained_ckpt" in c]
    assert used == [str(tmp_path / "mae0.pt"), "none", str(tmp_path / "mae1.pt"), "none"]  # no pre-training run


def test_pooled_evaluations_refuse_shared_cases(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("case,dice_x\nc0,0.5\nc1,0.6\n")
    b.write_text("case,dice_x\nc2,0.7\n")
    pooled = pool_evaluations([read_per_case(a), read_per_case(b)])
    assert pooled.cases == ["c0", "c1", "c2"] and pooled.values["dice"][:, 0].tolist() == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="c1"):
        pool_evaluations([read_per_case(a), read_per_case(a)])


def test_fold_auc_is_the_mean_of_the_folds_aucs_by_hand():
    # two folds whose models are calibrated differently: each ranks its own images perfectly
    scores = np.array([[0.1, 0.3], [0.2, 0.4], [0.8, 0.5], [0.9, 0.6]])
    labels = np.array([[0, 0], [1, 1], [0, 0], [1, 0]])  # class 2 has no positive in fold 1
    groups = np.array([0, 0, 1, 1])
    ones = np.ones((1, 4), dtype=np.int64)
    pooled = auc_resampled(scores, labels, ones)[0]
    assert pooled[0] == pytest.approx(0.75)  # one ranking of both folds: 0.2 < 0.8 counts against
    assert pooled[1] == pytest.approx(1 / 3)
    by_fold = auc_by_group(scores, labels, ones, groups)[0]
    assert by_fold.tolist() == pytest.approx([1.0, 1.0])  # class 2: fold 0 alone (undefined in fold 1)
    assert np.isnan(auc_by_group(scores, np.zeros((4, 2)), ones, groups)).all()  # undefined in every fold
    # the stratified bootstrap draws each fold's own number of cases from that fold
    for counts in bootstrap_counts(4, 30, seed=1, groups=groups):
        assert (counts[:, :2].sum(1) == 2).all() and (counts[:, 2:].sum(1) == 2).all()
    other = scores.copy()
    other[2:, 0] = [0.9, 0.8]  # fold 1 now ranked wrong: its AUC 0, fold 0's 1, mean 0.5
    result = paired_bootstrap(scores, other, ["a", "b"], "auc", labels=labels, n_resamples=200, groups=groups)
    assert result["per_class"]["a"]["difference"] == pytest.approx(0.5)
    assert result["per_class"]["b"]["difference"] == pytest.approx(0.0)
    assert result["arms"]["a"]["value"] == pytest.approx(1.0)
