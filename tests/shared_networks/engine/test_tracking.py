from __future__ import annotations

import os

import pytest
import torch

from shared_networks.engine.tracking import evaluation_artifacts, iteration_loss, run_name


def _former_mlflow_transform(out):  # the lambda configs/mlflow.yaml held
    return float(torch.as_tensor((out[0] if isinstance(out, list) else out)["loss"]).detach())


@pytest.mark.parametrize(
    "output",
    [
        {"loss": torch.tensor(0.25, requires_grad=True)},
        [{"loss": torch.tensor(1.5)}, {"loss": torch.tensor(1.5)}],
        {"loss": 2.0},
    ],
)
def test_iteration_loss_from_a_dict_or_a_decollated_list(output):
    value = iteration_loss(output)
    assert isinstance(value, float) and value == _former_mlflow_transform(output)
    first = output[0] if isinstance(output, list) else output
    assert value == torch.as_tensor(first["loss"]).detach().item()  # what the loggers made of `out["loss"]`


def test_run_name_is_the_output_folder():
    assert run_name("/a/b/runs/train") == "train"
    assert run_name("runs/evaluate/") == "evaluate"
    assert run_name(os.path.join("x", "linear_probe", ".")) == "linear_probe"


def test_evaluation_artifacts_name_the_config_and_the_evaluation_files():
    got = evaluation_artifacts("/r/evaluate/config_1.json", "/r/evaluate")
    assert got == ["/r/evaluate/config_1.json"] + [
        os.path.join("/r/evaluate", n) for n in ("summary.json", "per_case.csv", "predictions.csv")
    ]
    assert evaluation_artifacts(None, "o", names=("a.csv",)) == [None, os.path.join("o", "a.csv")]
