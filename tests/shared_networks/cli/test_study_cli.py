"""The study's command line: override options as fire reads them, and --tune_folds handed to the cross-validation
driver (the single study never calls it)."""

from __future__ import annotations

from shared_networks.cli import study as cli


def test_fire_arguments():
    assert cli.fire_argv(["--extra", "--max_epochs 1", "--seeds", "0"]) == ["--extra=--max_epochs 1", "--seeds", "0"]


def test_tune_folds_runs_the_cross_validation_driver(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "run_study", lambda *a, **k: calls.append(("run_study", a, k)))
    monkeypatch.setattr(cli, "run_folds", lambda *a, **k: calls.append(("run_folds", a, k)))
    assert cli.study("b", "d", str(tmp_path)) == f"{tmp_path}/summary.json"
    cli.study("b", "d", "out/", tune_folds="3", seeds="0")
    (name, args, kwargs), (cv_name, cv_args, cv_kwargs) = calls
    assert name == "run_study" and args == ("b", "d", str(tmp_path)) and "tune_folds" not in kwargs
    assert cv_name == "run_folds" and cv_args == ("b", "d", "out/", 3) and cv_kwargs["seeds"] == "0"
    assert cv_kwargs["tune_fraction"] == 0.0 and "tune_folds" not in cv_kwargs
