"""The lever table: settings read back from (cross-validated) study folders, paired with the reference image by image,
AUCs per fold averaged, seeds averaged, and the CLI's spec and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared_networks.cli.levers import main as levers_main
from shared_networks.study.levers import Setting, lever_markdown, lever_table, read_setting, settings_from_spec

CLASSES = ("A", "B")


def _write(folder: Path, images: list[str], probs: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = "image," + ",".join(CLASSES) + "," + ",".join(f"label_{c}" for c in CLASSES)
    lines = [header] + [
        ",".join([img, *(f"{p:.6f}" for p in pr), *(f"{int(v)}" for v in lb)])
        for img, pr, lb in zip(images, probs, labels, strict=True)
    ]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _study(root: Path, arm: str, seeds: dict[int, list[np.ndarray]], labels: list[np.ndarray]) -> Path:
    """A 2-fold study folder: per seed, per fold, the probabilities of the fold's images."""
    for k in range(2):
        for seed, per_fold in seeds.items():
            images = [f"f{k}_{i}.png" for i in range(len(labels[k]))]
            _write(
                root / f"fold{k}" / "runs" / f"fraction1_seed{seed}_{arm}" / "evaluate", images, per_fold[k], labels[k]
            )
    return root


@pytest.fixture
def folds() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    labels = [np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]]) for _ in range(2)]
    good = [lb * 0.6 + rng.uniform(0, 0.3, lb.shape) for lb in labels]  # separates every class
    poor = [rng.uniform(0, 1, lb.shape) for lb in labels]
    return labels, good, poor


def test_read_setting_averages_seeds_and_pools_folds(tmp_path, folds):
    labels, good, poor = folds
    study = _study(tmp_path / "s", "mae", {0: good, 1: poor}, labels)
    ev = read_setting(Setting("x", study, "mae"))
    assert ev.cases == [f"f{k}_{i}.png" for k in range(2) for i in range(6)]
    assert ev.groups.tolist() == [0] * 6 + [1] * 6
    np.testing.assert_allclose(ev.values["auc"][:6], (good[0] + poor[0]) / 2, atol=1e-6)
    only0 = read_setting(Setting("x", study, "mae", seeds=(0,)))
    np.testing.assert_allclose(only0.values["auc"][6:], good[1], atol=1e-6)


def test_lever_table_values_against_hand_computed_aucs(tmp_path, folds):
    labels, good, poor = folds
    ref = _study(tmp_path / "ref", "scratch", {0: poor}, labels)
    var = _study(tmp_path / "var", "mae", {0: good}, labels)
    rows = lever_table(Setting("reference", ref, "scratch"), [Setting("variant", var, "mae")], n_resamples=300)

    def mean_auc(probs: list[np.ndarray]) -> float:  # per class the mean of the folds' AUCs, then over classes
        return float(np.mean([np.mean([_auc(probs[k][:, j], labels[k][:, j]) for k in range(2)]) for j in range(2)]))

    assert rows[0]["verdict"] == "reference" and rows[0]["difference"] is None
    assert rows[0]["auc"] == pytest.approx(mean_auc(poor), abs=1e-9)
    assert rows[1]["auc"] == pytest.approx(1.0) == pytest.approx(mean_auc(good))
    assert rows[1]["difference"] == pytest.approx(1.0 - mean_auc(poor), abs=1e-9)
    lo, hi = rows[1]["difference_ci95"]
    assert lo <= rows[1]["difference"] <= hi
    assert rows[1]["n_images"] == 12 and rows[1]["n_folds"] == 2
    table = lever_markdown(rows)
    assert "| variant | mae | 1.000 [" in table and "12 in 2 fold(s)" in table


def test_same_setting_is_within_noise_with_a_zero_difference(tmp_path, folds):
    labels, good, _ = folds
    ref = _study(tmp_path / "ref", "mae", {0: good}, labels)
    rows = lever_table(Setting("r", ref, "mae"), [Setting("again", ref, "mae")], n_resamples=100)
    assert rows[1]["difference"] == 0.0 and rows[1]["difference_ci95"] == [0.0, 0.0]
    assert rows[1]["verdict"] == "within noise (CI contains 0)"


def test_settings_on_other_images_are_refused(tmp_path, folds):
    labels, good, _ = folds
    ref = _study(tmp_path / "ref", "mae", {0: good}, labels)
    other = tmp_path / "other"
    for k in range(2):
        images = [f"g{k}_{i}.png" for i in range(6)]
        _write(other / f"fold{k}" / "runs" / "fraction1_seed0_mae" / "evaluate", images, good[k], labels[k])
    with pytest.raises(ValueError, match="not evaluated on the same held-out images"):
        lever_table(Setting("r", ref, "mae"), [Setting("o", other, "mae")], n_resamples=10)
    with pytest.raises(FileNotFoundError, match="no run of arm 'probe_mae'"):
        read_setting(Setting("p", ref, "probe_mae"))


def test_cli_writes_the_table_from_a_spec(tmp_path, folds, capsys):
    labels, good, poor = folds
    _study(tmp_path / "cv" / "base", "mae", {0: poor}, labels)
    _study(tmp_path / "cv" / "long", "mae", {0: good}, labels)
    spec = tmp_path / "levers.json"
    spec.write_text(
        json.dumps(
            {
                "reference": {"label": "recipe", "study_dir": "cv/base", "arm": "mae"},
                "settings": [{"label": "longer", "study_dir": "cv/long", "arm": "mae", "seeds": [0]}],
            }
        )
    )
    levers_main(["--spec", str(spec), "--output_dir", str(tmp_path / "out"), "--n_resamples", "50"])
    saved = json.loads((tmp_path / "out" / "levers.json").read_text())
    assert [r["label"] for r in saved["rows"]] == ["recipe", "longer"] and saved["n_resamples"] == 50
    assert (tmp_path / "out" / "levers.md").read_text().count("\n| ") == 3
    spec.write_text(json.dumps({"reference": {"label": "r", "study_dir": "x"}, "settings": []}))
    with pytest.raises(ValueError, match=r"missing keys \['arm'\]"):
        settings_from_spec(spec)
