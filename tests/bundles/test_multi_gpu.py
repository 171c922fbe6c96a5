"""configs/multi_gpu_train.yaml of every bundle: merged config checks, real 2-process torchrun runs on the CPU (gloo).

The runs are `python -m torch.distributed.run --standalone --nproc_per_node 2 -m monai.bundle run` from the bundle
folder, as the docs give them, with configs/quick.yaml and tiny generated data sets. A test-only override appended to
each run saves, per rank, the final weights and what the rank saw (sampler lengths, learning rates, metrics).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from bundle_configs import BundleConfigs
from monai.bundle import ConfigParser

from shared_networks.synthetic.brain import write_msd_phantom_dataset
from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLES = {
    "btcv_mae_segmentation": ["pretrain", "train"],
    "brats_mae_segmentation": ["pretrain", "train"],
    "cxr14_mae_classification": ["pretrain", "train", "linear_probe"],
}
WORKFLOW_FILES = {"pretrain": ["pretrain"], "train": ["train"], "linear_probe": ["train", "linear_probe"]}
TRAINED_NETWORK = {"pretrain": "@mae", "train": "@network", "linear_probe": "@network"}
WORLD_SIZE = 2


def config_files(bundle: str, workflow: str, quick: bool = True) -> list[str]:
    names = [*WORKFLOW_FILES[workflow]] + (["quick"] if quick else []) + ["multi_gpu_train"]
    return [f"configs/{n}.yaml" for n in names]


def rank_state_override(path: Path, workflow: str) -> Path:
    """A config appended last (test only) that saves what each rank ends with into ``@rank_dir/rank<R>.pt``."""
    fields = [
        f"'weights': {TRAINED_NETWORK[workflow]}.state_dict()",
        "'initial_lr': [g['initial_lr'] for g in @optimizer.param_groups]",
        "'train_len': len(@train#dataloader.sampler)",
    ]
    if workflow != "pretrain":
        fields += [
            "'val_len': len(@validate#dataloader.sampler)",
            "'metrics': dict(@validate#evaluator.state.metrics)",
        ]
    target = "os.path.join(@rank_dir, f'rank{torch.distributed.get_rank()}.pt')"
    save = f"$torch.save({{{', '.join(fields)}}}, {target})"
    path.write_text(f'rank_dir: {json.dumps(str(path.parent))}\n+run:\n  - "{save}"\n')
    return path


def torchrun(bundle: str, workflow: str, rank_dir: Path, nproc: int = WORLD_SIZE, **override) -> tuple[list[dict], str]:
    """Runs a workflow on ``nproc`` processes; returns each rank's saved state (rank 0 first), on the CPU, and the
    output of all."""
    rank_dir.mkdir(parents=True)
    files = config_files(bundle, workflow) + [str(rank_state_override(rank_dir / "rank_state.yaml", workflow))]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(files),
        "--num_workers",
        "0",
    ]
    for key, value in override.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(
        cmd, cwd=REPO / "bundles" / bundle, capture_output=True, encoding="utf-8", errors="replace", timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{workflow} failed (rc {proc.returncode}):\n{output[-8000:]}"
    ranks = [torch.load(rank_dir / f"rank{r}.pt", map_location="cpu", weights_only=True) for r in range(nproc)]
    return ranks, output


def assert_same_weights(states: list[dict], reference: dict | None = None) -> None:
    first = states[0]["weights"]
    assert len(first) > 0
    for state in states[1:] + ([{"weights": reference}] if reference is not None else []):
        assert state["weights"].keys() == first.keys()
        for key, value in first.items():
            assert torch.equal(state["weights"][key], value), key


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def checkpoints_in(folder: Path) -> set[str]:
    """The checkpoint files of ``folder``; no temporary file may be left (a rank's half-finished or racing write)."""
    names = files_in(folder)
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    return set(names)


# merged configs


@pytest.mark.parametrize("bundle,workflow", [(b, w) for b, ws in BUNDLES.items() for w in ws])
def test_override_keeps_the_workflow_and_adds_the_distributed_parts(bundle, workflow):
    root = REPO / "bundles" / bundle
    base = ConfigParser.load_config_files([str(root / f) for f in config_files(bundle, workflow)[:-1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = ConfigParser.load_config_files([str(root / f) for f in config_files(bundle, workflow)])
    copied = sorted(re.search(r"\['(.+?)'\]", str(w.message))[1] for w in caught if "copying" in str(w.message))
    # pretrain.yaml has no validation: only there the '+validate' entries are copied instead of merged (unused)
    assert copied == (["+validate", "+validate#dataloader", "+validate#evaluator"] if workflow == "pretrain" else [])
    assert merged["imports"][: len(base["imports"])] == base["imports"]
    assert "$import torch.distributed" in merged["imports"]
    # the workflow's own initialize steps first, unchanged; the process group joined after them (nothing there needs it)
    assert merged["initialize"][: len(base["initialize"])] == base["initialize"]
    assert merged["initialize"][len(base["initialize"])] == "$shared_networks.init_process_group()"
    assert "finalize" not in base and merged["finalize"] == ["$shared_networks.destroy_process_group()"]
    assert merged["run"] == base["run"]
    trainer, base_trainer = merged["train"]["trainer"], base["train"]["trainer"]
    assert trainer["_target_"] == "shared_networks.DistributedTrainer"
    assert trainer["network"] == base_trainer["network"]  # the bare network: the trainer wraps it in DDP
    assert trainer["train_handlers"] == "$shared_networks.rank0_only(@train#handlers)"
    assert {k: v for k, v in trainer.items() if k not in ("_target_", "find_unused_parameters", "train_handlers")} == {
        k: v for k, v in base_trainer.items() if k not in ("_target_", "train_handlers")
    }
    loader, base_loader = merged["train"]["dataloader"], base["train"]["dataloader"]
    assert loader["sampler"] == "@train#sampler" and loader["shuffle"] is False
    assert loader["dataset"] == base_loader["dataset"] and loader["batch_size"] == base_loader["batch_size"]
    assert merged["train"]["sampler"]["dataset"] == "@train#dataset" and merged["train"]["sampler"]["shuffle"]
    if workflow == "pretrain":
        return
    loader, base_loader = merged["validate"]["dataloader"], base["validate"]["dataloader"]
    assert loader == {**base_loader, "sampler": "@validate#sampler", "shuffle": False}
    evaluator, base_evaluator = merged["validate"]["evaluator"], base["validate"]["evaluator"]
    rank0_handlers = "$shared_networks.rank0_only(@validate#handlers)"
    assert evaluator == {**base_evaluator, "val_handlers": rank0_handlers}
    assert merged["validate"]["sampler"]["even_divisible"] is False  # each image validated once


@pytest.mark.filterwarnings("ignore:Can't merge entry")
def test_without_torchrun_the_override_says_how_to_launch(tmp_path, monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    data = write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=8, size=32, seed=1)
    configs = BundleConfigs("cxr14_mae_classification", {"pretrain": ["pretrain", "multi_gpu_train"]})
    with pytest.raises(RuntimeError, match="init_process_group") as error:  # monai.bundle names the failed step
        configs.workflow("pretrain", "train", dataset_dir=str(data), ckpt_dir=str(tmp_path), output_dir=str(tmp_path))
    assert "RANK, LOCAL_RANK, WORLD_SIZE" in str(error.value.__cause__)
    assert "torchrun --nproc_per_node=N -m monai.bundle run" in str(error.value.__cause__)


# real runs on 2 processes


@pytest.mark.slow
def test_cxr14_pretrain_then_finetune_on_two_processes(tmp_path):
    data = write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=24, size=64, seed=3)
    models, runs = tmp_path / "models", tmp_path / "runs"
    common = dict(dataset_dir=data, ckpt_dir=models)
    configs = BundleConfigs("cxr14_mae_classification")

    ranks, log = torchrun(
        "cxr14_mae_classification",
        "pretrain",
        tmp_path / "pretrain_ranks",
        output_dir=runs / "pretrain",
        max_epochs=2,
        recon_interval=1,
        **common,
    )
    assert "mae.pt" in checkpoints_in(models)
    pngs = [n for n in files_in(runs / "pretrain") if n.endswith(".png")]
    events = [n for n in files_in(runs / "pretrain") if n.startswith("events.out.tfevents")]
    assert pngs == ["reconstruction_epoch1.png", "reconstruction_epoch2.png"] and len(events) == 1
    # only rank 0 attached the writing handlers (the other rank logs neither a save nor an image nor a loss line)
    assert log.count("saved final checkpoint") == 1 and log.count("reconstruction image:") == 2
    assert log.count("-- train_loss:") == 2 and log.count("rank 1 of 2 (local rank 1), backend gloo") == 1
    assert_same_weights(ranks, torch.load(models / "mae.pt", weights_only=True))
    n_pretrain = len(configs.parser("pretrain", dataset_dir=str(data)).get_parsed_content("datalist")["pretrain"])
    assert [r["train_len"] for r in ranks] == [-(-n_pretrain // 2)] * 2  # each rank reads its half of the images
    single_lr = configs.parser("pretrain", dataset_dir=str(data)).get_parsed_content("lr")
    for r in ranks:  # lr = mae_base_lr * batch_size * 2 / 256
        assert r["initial_lr"] == pytest.approx([WORLD_SIZE * single_lr] * len(r["initial_lr"]))

    ranks, log = torchrun(
        "cxr14_mae_classification",
        "train",
        tmp_path / "train_ranks",
        output_dir=runs / "train",
        max_epochs=2,
        val_interval=1,
        **common,
    )
    assert {"mae.pt", "model.pt"} <= checkpoints_in(models)
    assert log.count("tensors loaded") == 2 * WORLD_SIZE  # every rank starts from the MAE encoder (2 log lines each)
    assert log.count("Key metric: val_mean_auc best value") == 2  # StatsHandler of rank 0, 2 validations
    events = [n for n in files_in(runs / "train") if n.startswith("events.out.tfevents")]
    assert len(events) == 2  # rank 0's trainer and evaluator
    assert_same_weights(ranks)
    single = configs.workflow(
        "train", "train", dataset_dir=str(data), ckpt_dir=str(tmp_path / "single"), output_dir=str(tmp_path / "single")
    )
    single_lrs = [g["lr"] for g in single.parser.get_parsed_content("optimizer").param_groups]
    assert len(set(single_lrs)) > 1  # layer-wise decay: the ratios between groups are kept
    for r in ranks:
        assert r["initial_lr"] == pytest.approx([WORLD_SIZE * lr for lr in single_lrs])
    n_val = len(single.parser.get_parsed_content("datalist")["validation"])
    assert sorted(r["val_len"] for r in ranks) == [n_val // 2, n_val - n_val // 2]  # each image validated once
    # the validation metric of the 2 ranks is the one of the whole validation split: the same weights validated
    # here in a single process give the same mean AUC
    network = single.parser.get_parsed_content("network")
    network.load_state_dict(ranks[0]["weights"])
    evaluator = single.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    expected = evaluator.state.metrics["val_mean_auc"]
    assert [r["metrics"]["val_mean_auc"] for r in ranks] == pytest.approx([expected] * 2, abs=1e-6)


@pytest.mark.slow
def test_btcv_finetune_on_two_processes(tmp_path):
    data = write_btcv_phantom_dataset(tmp_path / "btcv", num_cases=6, seed=3)  # dataset_0.json: 4 training, 2 val
    models = tmp_path / "models"
    ranks, log = torchrun(
        "btcv_mae_segmentation",
        "train",
        tmp_path / "ranks",
        dataset_dir=data,
        split="dataset_json",
        pretrained_ckpt="none",
        ckpt_dir=models,
        output_dir=tmp_path / "runs",
        max_epochs=1,
        num_samples=1,
    )
    assert "model.pt" in checkpoints_in(models)
    assert log.count("Key metric: val_mean_dice best value") == 1
    assert_same_weights(ranks, torch.load(models / "model.pt", weights_only=True))  # one epoch: best = last
    assert [r["train_len"] for r in ranks] == [2, 2] and [r["val_len"] for r in ranks] == [1, 1]
    dice = [r["metrics"]["val_mean_dice"] for r in ranks]
    assert dice[0] == dice[1] and 0.0 <= dice[0] <= 1.0  # reduced over both validation volumes on every rank


@pytest.mark.slow
def test_brats_pretrain_on_two_processes(tmp_path):
    data = write_msd_phantom_dataset(
        tmp_path / "msd", num_cases=4, num_unlabelled=0, seed=3, shape=(56, 64, 48), spacing=(3.0, 3.0, 3.0)
    )
    models, runs = tmp_path / "models", tmp_path / "runs"
    ranks, log = torchrun(
        "brats_mae_segmentation",
        "pretrain",
        tmp_path / "ranks",
        dataset_dir=data,
        ckpt_dir=models,
        output_dir=runs,
        max_epochs=1,
        batch_size=1,
    )
    assert "mae.pt" in checkpoints_in(models)
    assert log.count("saved final checkpoint") == 1  # by rank 0 alone
    assert_same_weights(ranks, torch.load(models / "mae.pt", weights_only=True))
    assert [n for n in files_in(runs) if n.endswith(".png")] == ["reconstruction_epoch1.png"]


# on CUDA GPUs (nccl): skipped where there is none, as in CI


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nccl backend); none on this machine")
def test_btcv_finetune_then_cxr14_pretrain_on_the_gpus_with_nccl(tmp_path):
    nproc = min(WORLD_SIZE, torch.cuda.device_count())  # one process per GPU
    data = write_btcv_phantom_dataset(tmp_path / "btcv", num_cases=6, seed=3)
    models = tmp_path / "models"
    ranks, log = torchrun(
        "btcv_mae_segmentation",
        "train",
        tmp_path / "btcv_ranks",
        nproc=nproc,
        dataset_dir=data,
        split="dataset_json",
        pretrained_ckpt="none",
        ckpt_dir=models,
        output_dir=tmp_path / "runs",
        max_epochs=1,
        num_samples=1,
    )
    assert log.count(f"of {nproc} (local rank") == nproc and log.count("backend nccl") == nproc
    assert "model.pt" in checkpoints_in(models)
    assert_same_weights(ranks, torch.load(models / "model.pt", map_location="cpu", weights_only=True))
    assert sum(r["train_len"] for r in ranks) == 4 and sum(r["val_len"] for r in ranks) == 2
    dice = [r["metrics"]["val_mean_dice"] for r in ranks]
    assert len(set(dice)) == 1 and 0.0 <= dice[0] <= 1.0

    cxr = write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=24, size=64, seed=3)
    ranks, log = torchrun(
        "cxr14_mae_classification",
        "pretrain",
        tmp_path / "cxr_ranks",
        nproc=nproc,
        dataset_dir=cxr,
        ckpt_dir=models,
        output_dir=tmp_path / "cxr_runs",
        max_epochs=2,
    )
    assert log.count("backend nccl") == nproc and log.count("saved final checkpoint") == 1
    assert_same_weights(ranks, torch.load(models / "mae.pt", map_location="cpu", weights_only=True))
    assert all(torch.isfinite(v).all() for v in ranks[0]["weights"].values() if v.is_floating_point())
