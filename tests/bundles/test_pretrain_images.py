"""pretrain.yaml reads the training split's images, plus the unlabelled ones only with pretrain_extra_images, and logs
how many it reads and from where (MSD phantoms, configs/quick.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_configs import BundleConfigs

from shared_networks.synthetic.brain import write_msd_phantom_dataset


def _images(items) -> list[str]:
    return [i["image"] if isinstance(i["image"], str) else " + ".join(i["image"]) for i in items]


@pytest.fixture(scope="module")
def msd_phantom(tmp_path_factory) -> Path:
    return write_msd_phantom_dataset(
        tmp_path_factory.mktemp("msd"), num_cases=5, num_unlabelled=2, shape=(24, 24, 16), seed=0
    )


@pytest.mark.parametrize("extra", [False, True])
def test_pretrain_workflow_reads_and_logs_its_images(msd_phantom, tmp_path, capsys, extra) -> None:
    """pretrain.yaml: the dataset it trains on, and its log line, with and without pretrain_extra_images."""
    wf = BundleConfigs("brats_mae_segmentation").workflow(
        "pretrain",
        "train",
        dataset_dir=str(msd_phantom),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path / "r"),
        pretrain_extra_images=extra,
    )
    log = capsys.readouterr().out  # logging.conf logs to stdout
    datalist = wf.parser.get_parsed_content("datalist")
    read = _images(wf.parser.get_parsed_content("train#dataset").data)
    wf.finalize()
    n_train = len(datalist["training"])  # 5 cases in 5 folds: 3 training, 1 validation, 1 test
    assert n_train == 3
    unlabelled = [str(msd_phantom / "imagesTs" / f"BRATS_{n:03d}.nii.gz") for n in (6, 7)]
    assert read == _images(datalist["training"]) + (unlabelled if extra else [])
    assert not set(read) & set(_images(datalist["validation"] + datalist["test"]))
    n_extra = 2 if extra else 0
    expected = f"MAE pre-training reads {n_train + n_extra} images: {n_train} from the training split, {n_extra} extra"
    expected += f" from '{msd_phantom / 'imagesTs'}'" if extra else ""
    assert f"{expected} (pretrain_extra_images {str(extra).lower()})" in log
