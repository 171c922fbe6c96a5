"""Atomic file writes (:mod:`shared_networks.utils.files`), and the permissions of every file the project writes:
those of a plain ``open()`` under the user's umask (``0600`` under ``077``: datalists hold patient IDs)."""

from __future__ import annotations

import builtins
import json
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from shared_networks.data.cxr14 import write_cxr14_datalist
from shared_networks.data.files import save_nifti
from shared_networks.engine.checkpoints import AtomicCheckpointSaver, ResumableCheckpointSaver
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset
from shared_networks.utils.files import atomic_write, atomic_write_text, current_umask, new_file_mode, write_json_atomic
from shared_networks.validation.problems import ValidationReport


@pytest.fixture(params=[0o077, 0o022, 0o027], ids=lambda m: f"umask{m:03o}")
def umask(request):
    """The process umask set to the parameter for the test, restored after it."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_atomic_writers(tmp_path, umask):
    path = write_json_atomic({"a": [1, 2]}, tmp_path / "sub" / "x.json")
    assert json.loads(path.read_text()) == {"a": [1, 2]} and mode(path) == 0o666 & ~umask
    path.chmod(0o640)  # an existing file is replaced: the new one has the umask's mode
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["x.json"]
    assert mode(path) == 0o666 & ~umask
    with pytest.raises(ValueError, match="folder"):
        atomic_write_text(tmp_path, "x")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "x.txt", "old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_the_umask_is_read_without_changing_it(umask, monkeypatch):
    assert current_umask() == umask and new_file_mode() == 0o666 & ~umask
    assert os.umask(umask) == umask  # unchanged
    real_open = builtins.open

    def no_proc(file, *args, **kwargs):  # a system without /proc/self/status: os.umask, set back at once
        if str(file) == "/proc/self/status":
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert current_umask() == umask
    assert os.umask(umask) == umask


def test_every_written_file_has_the_mode_of_the_umask(tmp_path, umask):
    """The datalist, the validation report, mae.pt and training checkpoints, phantom images: ``0o666 & ~umask``
    (each was written through a temporary file and given 0644 before)."""
    want = 0o666 & ~umask
    data = write_cxr14_phantom_dataset(tmp_path / "cxr", num_patients=4, size=32, seed=1)  # PNGs, CSV, lists
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".csv" for p in written)
    written.append(write_cxr14_datalist(data, tmp_path / "datalist.json", num_val=1))
    written.append(ValidationReport("ChestX-ray14", str(data)).write_json(tmp_path / "report.json"))
    save_nifti(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "img.nii.gz")
    written.append(tmp_path / "img.nii.gz")
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path / "models"), save_dict={"model": net}, save_final=True, final_filename="mae.pt"
    ).attach(engine)
    ResumableCheckpointSaver(tmp_path / "models", {"network": net}, file_prefix="pretrain").attach(engine)
    engine.run([0], max_epochs=1)
    written += [tmp_path / "models" / "mae.pt", tmp_path / "models" / "pretrain_checkpoint_epoch=1.pt"]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written} == {
        str(p.relative_to(tmp_path)): oct(want) for p in written
    }
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["mae.pt", "pretrain_checkpoint_epoch=1.pt"]
