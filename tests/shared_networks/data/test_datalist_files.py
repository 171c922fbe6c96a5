"""One reader of a user's datalist JSON for the three data sets (shared_networks/data/files.py: load_datalist_file)."""

from __future__ import annotations

import json

import pytest

from shared_networks.data.brats import brats_datalist
from shared_networks.data.btcv import btcv_datalist
from shared_networks.data.cxr14 import cxr14_datalist
from shared_networks.data.files import load_datalist_file


def _parse(source, key, entries, labelled):
    return [{"image": e, **({"label": e + "_seg"} if labelled else {})} for e in entries]


def test_lists_read_relative_to_the_current_directory_and_pretrain_selected(tmp_path, monkeypatch):
    (tmp_path / "d.json").write_text(json.dumps({"training": ["a", "b"], "validation": ["c"], "pretrain": ["x"]}))
    monkeypatch.chdir(tmp_path)
    checked = []
    out = load_datalist_file("d.json", _parse, lambda source, dl: checked.append((source, dl["pretrain"])))
    assert checked == [(tmp_path / "d.json", [{"image": "x"}])]  # the check sees the file's lists as written
    assert [i["image"] for i in out["training"]] == ["a", "b"] and out["test"] == []
    assert [i["image"] for i in out["pretrain"]] == ["a", "b"]  # the training images only, by default
    out = load_datalist_file("d.json", _parse, lambda s, d: None, pretrain_extra_images=True)
    assert [i["image"] for i in out["pretrain"]] == ["a", "b", "x"]


@pytest.mark.parametrize("build", [btcv_datalist, brats_datalist, cxr14_datalist])
def test_unknown_keys_are_refused_by_every_data_set(build, tmp_path):
    path = tmp_path / "my_list.json"
    path.write_text(json.dumps({"training": [], "traning": [{"image": "a.nii.gz"}]}))  # a misspelt list
    with pytest.raises(ValueError, match=r"my_list.json': unknown key\(s\) \['traning'\]"):
        build(tmp_path, datalist_file=str(path))
