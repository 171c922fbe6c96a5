"""The chest X-ray classifier's weights between the bundle's workflows: fine-tuned weights (MAE's global-pool head,
no encoder final norm) load in evaluation and inference; weights of the earlier head are refused, naming the file."""

from __future__ import annotations

import csv

import pytest
import torch
from bundle_configs import BundleConfigs

from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

CONFIGS = BundleConfigs("cxr14_mae_classification")  # evaluate over train.yaml, quick.yaml last


def _chain(err: BaseException) -> list[str]:
    messages = []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__
    return messages


def test_finetuned_weights_load_in_evaluate_and_inference(tmp_path):
    data = write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=6, size=64, seed=5)
    torch.manual_seed(0)
    trained = CONFIGS.parser("train").get_parsed_content("network_def")  # as train.yaml saves it
    state = trained.state_dict()
    assert "fc_norm.weight" in state and not any(k.startswith("encoder.norm.") for k in state)
    torch.save(state, tmp_path / "model.pt")
    evaluated = CONFIGS.parser("evaluate").get_parsed_content("network_def")
    evaluated.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)

    out = tmp_path / "inference"
    wf = CONFIGS.workflow(
        "inference", "infer", dataset_dir=str(data / "images"), ckpt_dir=str(tmp_path), output_dir=str(out)
    )
    wf.run()
    wf.finalize()
    with open(out / "probabilities.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list((data / "images").glob("*.png"))) > 0

    # a model.pt of the earlier head (the encoder's final norm on every token before the average)
    (tmp_path / "old").mkdir()
    old = {**state, "encoder.norm.weight": torch.ones(96), "encoder.norm.bias": torch.zeros(96)}
    torch.save(old, tmp_path / "old" / "model.pt")
    wf = CONFIGS.workflow(
        "inference",
        "infer",
        dataset_dir=str(data / "images"),
        ckpt_dir=str(tmp_path / "old"),
        output_dir=str(tmp_path / "old_out"),
    )
    with pytest.raises(RuntimeError) as err:
        wf.run()
    messages = _chain(err.value)
    assert any("old/model.pt" in m and "earlier average-pool head" in m for m in messages), messages
    assert not (tmp_path / "old_out" / "probabilities.csv").exists()
