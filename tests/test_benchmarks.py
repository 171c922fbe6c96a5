"""The benchmark harness's own logic (no timing): case resizing, the memory child's case, run_all's commands, the
workflow and CPU inference benchmarks' parsing, cases and measures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_cpu_inference  # noqa: E402
import bench_mae_step  # noqa: E402
import bench_workflow  # noqa: E402
import run_all  # noqa: E402


def test_with_batch_renames_the_case_and_base_case_finds_its_entry():
    case = bench_mae_step.CASES["3d_vitb16_96_b2"]
    assert bench_mae_step.with_batch(case, None) is case and bench_mae_step.with_batch(case, 2) is case
    big = bench_mae_step.with_batch(case, 32)
    assert big.name == "3d_vitb16_96_b32" and big.batch == 32
    assert (big.img_size, big.spatial_dims, big.decoder_hidden_size) == (96, 3, 384)
    assert bench_mae_step.make_input(bench_mae_step.with_batch(case, 3)).shape == (3, 1, 96, 96, 96)
    assert bench_mae_step.base_case(big) is case
    assert bench_mae_step.base_case(bench_mae_step.with_batch(bench_mae_step.CASES["2d_vitb16_224_b8"], 128)).name == (
        "2d_vitb16_224_b8"
    )
    with pytest.raises(SystemExit, match="--batch must be >= 1"):
        bench_mae_step.with_batch(case, 0)


def test_run_all_gives_monai_its_own_default_optimiser_per_device():
    cpu, cuda = run_all.commands("cpu", quick=False), run_all.commands("cuda", quick=False)
    assert set(cpu) == set(cuda) == set(run_all.PARTS)
    for cmd in cpu["mae"] + cpu["unetr"]:
        assert "--monai-optimizer" not in cmd  # the script's default: the for-loop, torch's default on the CPU
    for cmd in cuda["mae"] + cuda["unetr"]:
        assert cmd[cmd.index("--monai-optimizer") + 1] == "foreach"  # torch's default on CUDA
    assert [c[c.index("--precision") + 1] for c in cuda["mae"]] == ["bf16", "fp32"]
    assert cuda["data"] == [] and cpu["data"] == [["bench_data.py", "--repeats", "5"]]
    volumes = [c[c.index("--volume") + 1 : c.index("--volume") + 4] for c in cuda["sliding"]]
    assert volumes == [["512", "512", "100"], ["273", "273", "125"]]


def test_run_all_runs_the_workflow_parts_on_the_cpu_and_skips_them_when_asked():
    cpu, cuda = run_all.commands("cpu", quick=False), run_all.commands("cuda", quick=False)
    assert cpu["workflow"] == [["bench_workflow.py", "--epochs", "6"]]
    assert run_all.commands("cpu", quick=True, full_workflows=True)["workflow"] == [
        ["bench_workflow.py", "--epochs", "3", "--all"]
    ]
    assert cpu["cpu_inference"] == [["bench_cpu_inference.py", "--repeats", "1"]]
    assert cuda["workflow"] == cuda["cpu_inference"] == []
    assert run_all.selected(run_all.PARTS, skip_slow=False) == list(run_all.PARTS)
    assert run_all.selected(run_all.PARTS, skip_slow=True) == ["mae", "unetr", "data", "sliding"]
    assert run_all.selected(["data", "workflow"], skip_slow=False) == ["data", "workflow"]


def test_workflow_log_parsing_keeps_the_trainers_epochs():
    trainer, evaluator = "10:00 - ignite.engine.engine.SupervisedTrainer - INFO", "10:00 - SupervisedEvaluator - INFO"
    log = "\n".join(
        [
            "10:00 - shared_networks.engine.runtime - INFO - CPU threads: 3 torch thread(s) in the main process",
            f"{trainer} - Epoch[1] Complete. Time taken: 00:00:02.500",
            f"{evaluator} - Epoch[1] Complete. Time taken: 00:00:09.000",
            f"{trainer} - Epoch[2] Complete. Time taken: 00:01:01.250",
            f"{trainer} - Epoch[3] Complete. Time taken: 01:00:00.000",
        ]
    )
    assert bench_workflow.parse_log(log) == ([2.5, 61.25, 3600.0], 3)
    assert bench_workflow.parse_log("no such lines") == ([], None)


@pytest.mark.parametrize("name", sorted(bench_workflow.CASES))
def test_workflow_cases_override_only_settings_of_their_configs(name):
    """A misspelt size override would add an unused key and change nothing: every override is a setting."""
    from monai.bundle import ConfigParser

    case = bench_workflow.CASES[name]
    parser = ConfigParser()
    parser.read_config(bench_workflow.config_files(case))
    overrides = bench_workflow.case_overrides(case, Path("/data"), Path("/work"), epochs=3, torch_threads="auto")
    for key in overrides:
        assert key in parser, (name, key)
    assert overrides["dataset_dir"] == f"/data/{case.data}" and overrides["max_epochs"] == 3
    if name.startswith("cxr14"):
        assert (overrides["img_size"], overrides["hidden_size"], overrides["batch_size"]) == ([112, 112], 192, 64)


def test_cpu_inference_dice_and_arms(tmp_path):
    import numpy as np

    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True  # 8 and 8 voxels, 4 shared: 2 * 4 / 16
    assert bench_cpu_inference.dice(a, b) == 0.5
    assert np.isnan(bench_cpu_inference.dice(np.zeros(3, bool), np.zeros(3, bool)))
    arms = bench_cpu_inference.arms(bench_cpu_inference.BUNDLE, levers=True, overrides={"torch_threads": 2})
    assert arms["exact"] == {"cpu_bf16": "false", "sw_overlap": 0.5, "sw_batch_size": 4, "torch_threads": 2}
    assert arms["bf16"]["cpu_bf16"] == "true" and arms["bf16"]["sw_overlap"] == 0.5
    assert arms["overlap_0.25"]["sw_overlap"] == 0.25 and arms["overlap_0.25"]["cpu_bf16"] == "false"
    assert arms["default"]["cpu_bf16"] == "auto"  # the bundle's inference.yaml


def test_cpu_inference_ct_is_kept_whole_by_the_bundles_preprocessing(tmp_path):
    """The generated CT reaches the sliding window as 273 x 273 x 125 voxels (no resampling, no foreground crop)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    path = bench_cpu_inference.write_ct(tmp_path / "ct.nii.gz", shape=(40, 30, 20))
    parser = ConfigParser()
    parser.read_config(str(bench_cpu_inference.BUNDLE / "configs" / "inference.yaml"))
    image = Compose(parser.get_parsed_content("deterministic_transforms"))({"image": str(path)})["image"]
    assert tuple(image.shape) == (1, 40, 30, 20)


@pytest.mark.slow
def test_cpu_inference_network_levers_run_and_agree(tmp_path, monkeypatch):
    """The network-level levers on a small UNETR at the bundle's 96^3 window (no timing asserted): fp32 under
    inference_mode and channels-last equal plain fp32's argmax, ONNX Runtime nearly, bf16 mostly."""
    import argparse

    import torch

    from shared_networks.networks.unetr import UNETR

    def small(bundle):
        torch.manual_seed(0)
        return UNETR(
            in_channels=1,
            out_channels=3,
            img_size=(96, 96, 96),
            patch_size=16,
            hidden_size=48,
            num_layers=2,
            num_heads=2,
            mlp_dim=64,
            skip_indices=(0, 1, 1),
            feature_size=4,
        ).eval()

    monkeypatch.setattr(bench_cpu_inference, "build_network", small)
    model = tmp_path / "model.pt"
    torch.save({"model": small(None).state_dict()}, model)
    args = argparse.Namespace(sw_batch_size=1, repeats=1, onnx=True, compile=False)
    rec = bench_cpu_inference.network_levers(args, bench_cpu_inference.BUNDLE, model, tmp_path)
    assert not [k for k in rec if k.endswith("_error")], rec
    assert rec["fp32_no_grad_agreement"] == rec["fp32_inference_mode_agreement"] == 1.0
    assert rec["fp32_channels_last_agreement"] >= 0.999 and rec["onnxruntime_fp32_agreement"] >= 0.999
    assert rec["bf16_agreement"] >= 0.9 and rec["bf16_channels_last_agreement"] >= 0.9
    assert {f"{lever}_speedup" for lever in ("bf16", "onnxruntime_fp32")} <= set(rec)
