"""The bundles' loading, thread, checkpoint and inference-speed settings (configs only; nothing is run)."""

from __future__ import annotations

import pytest
from bundle_configs import BundleConfigs
from monai.bundle import ConfigParser

import shared_networks

BUNDLES = ("btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification")
SEGMENTATION = BUNDLES[:2]
TRAINING = ("pretrain", "train")


def _loaders(parser: ConfigParser) -> dict[str, dict]:
    """Every ``DataLoader`` component of the config, by id."""
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("_target_") == "DataLoader":
                found["#".join(path)] = node
            for k, v in node.items():
                walk(v, [*path, str(k)])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, [*path, str(i)])

    walk(parser.get(), [])
    return found


def _workflows(bundle: str) -> list[str]:
    return ["pretrain", "train", "inference", "evaluate"] + (["linear_probe"] if bundle.startswith("cxr14") else [])


# the linear probe's loaders run in the main process: its runtime cache of encoder features would be lost with worker
# processes after each epoch (shared_networks/data/features.py)
MAIN_PROCESS_LOADERS = {("linear_probe", "train#dataloader"), ("linear_probe", "validate#dataloader")}


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("workers", [0, 3])
def test_loaders_prefetch_and_keep_their_workers(bundle, workers):
    """Every loader starts its workers with one thread and MONAI's seeding and prefetches; the validation, evaluation
    and inference loaders keep their workers; the training loader only with persistent_workers true (exact resume).
    The linear probe's loaders have no workers (:data:`MAIN_PROCESS_LOADERS`)."""
    configs = BundleConfigs(bundle)
    for name in _workflows(bundle):
        parser = configs.parser(name, quick=False, num_workers=workers)
        loaders = _loaders(parser)
        assert loaders, name
        for lid, loader in loaders.items():
            assert loader["worker_init_fn"] == "$shared_networks.loader_worker_init", (name, lid)
            prefetch = parser.get_parsed_content(f"{lid}#prefetch_factor")
            persistent = parser.get_parsed_content(f"{lid}#persistent_workers")
            if (name, lid) in MAIN_PROCESS_LOADERS:
                assert parser.get_parsed_content(f"{lid}#num_workers") == 0, (name, lid)
                assert prefetch is None and persistent is False, (name, lid)
                continue
            assert prefetch == (2 if workers else None), (name, lid)  # torch refuses a prefetch without workers
            if lid == "train#dataloader":
                assert persistent is False
                parser["persistent_workers"] = True
                assert parser.get_parsed_content(f"{lid}#persistent_workers") is bool(workers)
            else:
                assert persistent is bool(workers), (name, lid)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_workflow_splits_the_cores_right_after_the_override_check(bundle):
    configs = BundleConfigs(bundle)
    for name in _workflows(bundle):
        parser = configs.parser(name, quick=False)
        init = parser["initialize"]
        assert init[0] == "$shared_networks.check_overrides()", name
        assert init[1].startswith("$shared_networks.configure_threads(@loader_workers, @torch_threads"), name
        # training keeps a core per loader worker; inference and evaluation, whose workers mostly wait, do not
        assert ("dedicated_workers=False" in init[1]) is (name in ("inference", "evaluate")), name
        assert parser["torch_threads"] == "auto"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_resume_checkpoints_by_time_and_epochs(bundle):
    configs = BundleConfigs(bundle)
    for name in TRAINING:
        full, quick = configs.parser(name, quick=False), configs.parser(name, quick=True)
        assert (full["ckpt_every_minutes"], full["ckpt_interval"]) == (10, 0), name  # by time, not every N epochs
        assert (quick["ckpt_every_minutes"], quick["ckpt_interval"]) == (0, 0), name  # quick runs write none
        savers = [h for h in full["train"]["handlers"] if h["_target_"] == "shared_networks.ResumableCheckpointSaver"]
        assert len(savers) == 1 and savers[0]["save_every_minutes"] == "@ckpt_every_minutes", name


@pytest.mark.parametrize("bundle", SEGMENTATION)
@pytest.mark.parametrize("name", ["train", "inference"])
def test_sliding_window_runs_under_the_cpu_bf16_setting(bundle, name):
    parser = BundleConfigs(bundle).parser(name, quick=False, device="$torch.device('cpu')", cpu_bf16="false")
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, shared_networks.AutocastInferer) and inferer.bf16 is False
    window = inferer.inferer
    assert (window.overlap, window.sw_batch_size, window.mode) == (parser["sw_overlap"], 4, "gaussian")
    assert parser["cpu_bf16"] == "false" and BundleConfigs(bundle).parser(name, quick=False)["cpu_bf16"] == "auto"
