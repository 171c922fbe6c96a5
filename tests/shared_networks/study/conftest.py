"""Fakes of the study's tests: a bundle folder whose ``train.yaml`` holds its datalist, and runners that write what
each workflow would (``mae.pt``, ``model.pt``, ``per_case.csv``) instead of running it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

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


@pytest.fixture
def fake_bundle() -> Callable[..., Path]:
    """``fake_bundle(root, probe=False)``: a bundle folder (pretrain, train, evaluate, quick and, with ``probe``,
    linear_probe configs) of 12 cases: 8 training, 2 validation, 2 test."""
    return _fake_bundle


@pytest.fixture
def fake_runner() -> type[FakeRunner]:
    """The class of the runner that writes every workflow's files; each test makes its own."""
    return FakeRunner


@pytest.fixture
def fold_runner() -> type[FoldRunner]:
    """The class of the runner that evaluates each datalist's own test cases (for held-out folds)."""
    return FoldRunner
