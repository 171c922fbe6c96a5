"""Experiment tracking of the bundles: TensorBoard always, MLflow with ``--tracking configs/mlflow.yaml``."""

from __future__ import annotations

import json
import locale
from pathlib import Path

import pytest
from bundle_configs import BundleConfigs
from monai.bundle import ConfigParser, ConfigWorkflow

from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset
from shared_networks.tools.report import read_scalars

BUNDLES = ["btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"]
# the handler lists MLflow must join, per workflow
EXPECTED = {
    "pretrain": ["train#handlers"],
    "train": ["train#handlers", "validate#handlers"],
    # evaluate.yaml merges over train.yaml, whose trainer and validator stay in the config (unused: evaluation runs
    # @evaluator alone), so MLflow joins their lists too, as with model-zoo's evaluate.json over train.json
    "evaluate": ["train#handlers", "validate#handlers", "handlers"],
    "inference": ["handlers"],
}


@pytest.fixture(autouse=True)
def utf8_locale():
    """MONAI opens config files in the locale's encoding, and the BraTS configs hold non-ASCII text ('⊇'). In the
    whole suite an earlier test in the same process has left the C locale's LC_CTYPE at ASCII; read as UTF-8 here."""
    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:
        pass
    yield
    locale.setlocale(locale.LC_CTYPE, saved)


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Same steps, same values (TensorBoard stores float32, MLflow float64)."""
    return [s for s, _ in a] == [s for s, _ in b] and [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-6)


def _mlflow_handlers(parser: ConfigParser, handlers_id: str) -> list[dict]:
    return [h for h in parser.get(handlers_id) or [] if isinstance(h, dict) and h.get("_target_") == "MLFlowHandler"]


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("workflow", list(EXPECTED))
def test_mlflow_settings_join_the_handler_lists_each_workflow_has(bundle, workflow, tmp_path):
    configs = BundleConfigs(bundle)
    parser = configs.parser(workflow, output_dir=str(tmp_path / workflow))
    settings = ConfigParser.load_config_files(str(configs.configs / "mlflow.yaml"))
    ConfigWorkflow.patch_bundle_tracking(parser, settings)
    for handlers_id in ("train#handlers", "validate#handlers", "handlers"):
        found = _mlflow_handlers(parser, handlers_id)
        assert len(found) == (handlers_id in EXPECTED[workflow]), (workflow, handlers_id)
    assert parser.get_parsed_content("experiment_name") == bundle
    assert parser.get_parsed_content("run_name") == workflow
    store = configs.root / "runs" / "mlflow.db"
    assert parser.get_parsed_content("tracking_uri") == f"sqlite:///{store.as_posix()}"
    assert len(list((tmp_path / workflow).glob("config_*.json"))) == 1  # the merged config, logged as an artifact


def test_mlflow_tracking_uri_from_the_command_line_wins(tmp_path):
    configs = BundleConfigs("cxr14_mae_classification")
    uri = f"sqlite:///{(tmp_path / 'elsewhere.db').as_posix()}"
    parser = configs.parser("train", output_dir=str(tmp_path), tracking_uri=uri)
    ConfigWorkflow.patch_bundle_tracking(parser, ConfigParser.load_config_files(str(configs.configs / "mlflow.yaml")))
    assert parser.get_parsed_content("tracking_uri") == uri


@pytest.mark.slow
def test_quick_runs_write_mlflow_runs_and_tensorboard_events(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    data = write_cxr14_phantom_dataset(tmp_path / "data", num_patients=24, size=64, seed=3)
    configs = BundleConfigs("cxr14_mae_classification")
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    runs = tmp_path / "runs"
    common = dict(
        dataset_dir=str(data),
        ckpt_dir=str(tmp_path / "models"),
        tracking_uri=uri,
        tracking=str(configs.configs / "mlflow.yaml"),
    )
    for name, kind, extra in (
        ("pretrain", "train", dict(max_epochs=1)),
        ("train", "train", dict(max_epochs=2, val_interval=1)),
        ("evaluate", "infer", {}),
    ):
        wf = configs.workflow(name, kind, output_dir=str(runs / name), **extra, **common)
        wf.run()
        wf.finalize()

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("cxr14_mae_classification")
    found = {r.info.run_name: r for r in client.search_runs(experiment.experiment_id)}
    assert sorted(found) == ["evaluate", "pretrain", "train"]
    assert all(r.info.status == "FINISHED" for r in found.values())

    def history(run: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(found[run].info.run_id, key))

    # MLflow holds what TensorBoard holds: loss per iteration, validation AUC per epoch, the evaluation's mean AUC
    tb = {name: read_scalars(runs / name) for name in found}
    assert _same(history("pretrain", "train_loss"), tb["pretrain"]["train_loss"])
    assert [s for s, _ in history("train", "val_mean_auc")] == [1, 2]
    assert _same(history("train", "val_mean_auc"), tb["train"]["val_mean_auc"])
    assert _same(history("train", "train_loss"), tb["train"]["train_loss"])
    assert any(k.startswith("lr_group_") for k in found["train"].data.metrics)
    assert found["train"].data.params["max_epochs"] == "2"
    summary = json.loads((runs / "evaluate" / "summary.json").read_text())
    assert _same(history("evaluate", "mean_auc"), [(1, summary["mean_auc"])])
    assert _same(tb["evaluate"]["mean_auc"], [(1, summary["mean_auc"])])

    def artifacts(run: str) -> set[str]:
        return {Path(a.path).name for a in client.list_artifacts(found[run].info.run_id)}

    assert {"summary.json", "predictions.csv"} <= artifacts("evaluate")
    assert any(n.startswith("events.out.tfevents") for n in artifacts("train"))
    assert "reconstruction_epoch1.png" in artifacts("pretrain")
    assert Path(found["pretrain"].info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "mlruns")
