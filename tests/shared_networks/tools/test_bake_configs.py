"""Baking override files into standalone configs: values replaced in place, comments kept, nothing else changed."""

from __future__ import annotations

import pytest
import yaml

from shared_networks.tools.bake_configs import BAKED_MARK, bake_bundle_configs, bake_text, read_overrides

CONFIG = """\
# a workflow
imports:
  - $import torch
roi_size: [96, 96, 96]  # reference crop
class_names: [a, b,
  c]
skip_indices:
  - 3
  # the middle skip
  - 6

hidden_size: 768
lr: $@base_lr * 2
network_def:
  _target_: Net
  hidden_size: '@hidden_size'
"""


def test_bake_replaces_top_level_values_in_place_and_keeps_comments():
    overrides = {"roi_size": [48, 48, 48], "skip_indices": [1], "class_names": ["x"], "unused": 3, "lr": "$0.5"}
    text, keys = bake_text(CONFIG, overrides, "configs/quick.yaml")
    assert keys == ["roi_size", "class_names", "skip_indices", "lr"]
    lines = text.splitlines()
    assert lines[0] == f"{BAKED_MARK} configs/quick.yaml (roi_size, class_names, skip_indices, lr)"
    assert "roi_size: [48, 48, 48]  # from configs/quick.yaml (was: [96, 96, 96])" in lines
    assert "# a workflow" in lines and "  hidden_size: '@hidden_size'" in lines  # the rest untouched
    want = {**yaml.safe_load(CONFIG), "roi_size": [48, 48, 48], "skip_indices": [1], "class_names": ["x"], "lr": "$0.5"}
    assert yaml.safe_load(text) == want  # "unused" is not added: this workflow does not read it


def test_bake_bundle_configs_writes_every_file_and_skips_the_overrides(tmp_path):
    src = tmp_path / "configs"
    src.mkdir()
    (src / "train.yaml").write_text(CONFIG)
    (src / "metadata.json").write_text('{"version": "1"}')
    (src / "quick.yaml").write_text("hidden_size: 96  # tiny\n")
    report = bake_bundle_configs(src, [src / "quick.yaml"], tmp_path / "out")
    assert report == {"train.yaml": ["hidden_size"]}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metadata.json", "train.yaml"]
    assert yaml.safe_load((tmp_path / "out" / "train.yaml").read_text())["hidden_size"] == 96
    assert (tmp_path / "out" / "metadata.json").read_text() == '{"version": "1"}'


@pytest.mark.parametrize("content", ["train#trainer#max_epochs: 2\n", "+imports: [x]\n", "- 1\n"])
def test_overrides_that_cannot_be_baked_name_the_file(tmp_path, content):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(ValueError, match="bad.yaml"):
        read_overrides([f])
