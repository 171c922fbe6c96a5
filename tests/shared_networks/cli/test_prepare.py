"""The datalist commands (:mod:`shared_networks.cli.prepare`): check a data set, then write its datalist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared_networks.cli.prepare import main, prepare_btcv
from shared_networks.synthetic.brain import write_msd_phantom_dataset
from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset


@pytest.fixture(scope="module")
def btcv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("btcv")
    return write_btcv_phantom_dataset(root / "data", num_cases=3, shape=(32, 32, 16), spacing=(9.0, 9.0, 16.0))


def test_btcv_command(btcv_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "datalist.json"
    main(["btcv", "--dataset_dir", str(btcv_dir), "--output_json", str(output), "--num_val", "1", "--seed", "0"])
    assert str(output) in capsys.readouterr().out
    content = json.loads(output.read_text())
    assert len(content["validation"]) == 1 and content["training"][0]["image"].startswith("imagesTr/")
    with pytest.raises(SystemExit) as exit_info:
        main(["btcv", "--help"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    help_text = captured.out + captured.err  # fire writes its help to stderr
    assert "RawData/Training/img" in help_text and "imagesTr" in help_text and "--split" in help_text


def test_brats_command(tmp_path: Path) -> None:
    data = write_msd_phantom_dataset(tmp_path / "data", num_cases=3, num_unlabelled=1, shape=(16, 16, 12))
    main(["brats", "--dataset_dir", str(data), "--output_json", str(tmp_path / "dl.json"), "--num_folds", "3"])
    content = json.loads((tmp_path / "dl.json").read_text())
    assert len(content["test"]) == 1 and content["pretrain"] == [
        {k: item[k] for k in ("image", "case", "layout")} for item in content["training"]
    ]  # the training images alone
    main(
        [
            "brats",
            "--dataset_dir",
            str(data),
            "--output_json",
            str(tmp_path / "dl.json"),
            "--num_folds",
            "3",
            "--pretrain_extra_images",
            "true",
        ]
    )
    content = json.loads((tmp_path / "dl.json").read_text())
    assert [i["image"] for i in content["pretrain"]] == [i["image"] for i in content["training"]] + [
        "imagesTs/BRATS_004.nii.gz"
    ]


def test_cxr14_command(tmp_path: Path) -> None:
    data = write_cxr14_phantom_dataset(tmp_path / "data", num_patients=6, size=32, seed=1)
    main(["cxr14", "--dataset_dir", str(data), "--output_json", str(tmp_path / "d.json"), "--num_val", "1"])
    content = json.loads((tmp_path / "d.json").read_text())
    assert content["test"] and content["validation"] and content["training"]


def test_validate_flag(btcv_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (broken / sub).mkdir()
        for f in (btcv_dir / sub).iterdir():
            (broken / sub / f.name).write_bytes(f.read_bytes())
    image = broken / "imagesTr" / "img0001.nii.gz"
    image.write_bytes(image.read_bytes()[:200])  # truncated: a datalist can still be built from the names
    with pytest.raises(ValueError, match="img0001.nii.gz"):
        prepare_btcv(broken, tmp_path / "refused.json", num_val=1)
    assert not (tmp_path / "refused.json").exists()
    assert prepare_btcv(broken, tmp_path / "unchecked.json", num_val=1, validate="false").is_file()
    with pytest.raises(ValueError, match="validate must be true or false.*'maybe'"):
        prepare_btcv(broken, tmp_path / "x.json", validate="maybe")


@pytest.mark.slow
def test_command_line_module(btcv_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "datalist.json"
    command = [sys.executable, "-m", "shared_networks.cli.prepare", "btcv", "--dataset_dir", str(btcv_dir)]
    result = subprocess.run(
        [*command, "--output_json", str(output), "--num_val", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(output.read_text())["validation"]) == 1


def test_the_commands_take_the_writers_arguments_and_docstrings():
    """cli.prepare restates nothing: each command is its data set's datalist writer plus the checks' arguments."""
    import inspect

    from shared_networks.cli import prepare
    from shared_networks.data.brats import write_brats_datalist
    from shared_networks.data.btcv import write_btcv_datalist
    from shared_networks.data.cxr14 import write_cxr14_datalist

    for command, write, limit, stored in [
        (prepare.prepare_btcv, write_btcv_datalist, "max_voxels", []),
        (prepare.prepare_brats, write_brats_datalist, "max_voxels", []),
        # ChestX-ray14: the prepared store's own arguments too (shared_networks.data.prepared.write_cxr14_store)
        (prepare.prepare_cxr14, write_cxr14_datalist, "max_pixels", ["output_dir", "cache_size", "dtype"]),
    ]:
        written = [*inspect.signature(write).parameters, *stored]
        checks = ["validate", "read_data", "num_workers", limit]
        assert list(inspect.signature(command).parameters) == [*written, *checks]
        doc = inspect.getdoc(command)
        for name in written:  # every argument documented once, in the writer's words
            assert doc.count(f"    {name}: ") == 1, (command.__name__, name)
        assert "Every file is checked first" in doc and "not checked here" not in doc
