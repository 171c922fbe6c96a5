"""Runs a bundle's workflows in-process through ``monai.bundle.ConfigWorkflow``, as ``monai.bundle run`` does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser, ConfigWorkflow

REPO = Path(__file__).resolve().parents[2]


class BundleConfigs:
    """The config files of ``bundles/<name>``: ``common.yaml``, the workflow's file(s), then ``quick.yaml``.

    Args:
        name: bundle folder name.
        workflow_files: workflows made of several files, e.g. ``{"linear_probe": ["train", "linear_probe"]}``.
    """

    def __init__(self, name: str, workflow_files: Mapping[str, Sequence[str]] | None = None) -> None:
        self.root = REPO / "bundles" / name
        self.configs = self.root / "configs"
        self.workflow_files = dict(workflow_files or {})

    def files(self, name: str, quick: bool = True) -> list[str]:
        names = ["common", *self.workflow_files.get(name, [name])] + (["quick"] if quick else [])
        return [str(self.configs / f"{n}.yaml") for n in names]

    def workflow(self, name: str, workflow_type: str, quick: bool = True, **override) -> ConfigWorkflow:
        """An initialised workflow (one worker-less data loader per dataset, bundle_root set) with ``override``."""
        wf = ConfigWorkflow(
            config_file=self.files(name, quick),
            meta_file=str(self.configs / "metadata.json"),
            logging_file=str(self.configs / "logging.conf"),
            workflow_type=workflow_type,
            bundle_root=str(self.root),
            num_workers=0,
            **override,
        )
        wf.initialize()
        return wf

    def parser(self, name: str, quick: bool = True, **override) -> ConfigParser:
        """The merged config of a workflow, not run, with ``override`` applied."""
        p = ConfigParser()
        p.read_config(self.files(name, quick))
        p.update({"bundle_root": str(self.root), "num_workers": 0, **override})
        return p
