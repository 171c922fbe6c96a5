"""Runs a bundle's workflows in-process through ``monai.bundle.ConfigWorkflow``, as ``monai.bundle run`` does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser, ConfigWorkflow

REPO = Path(__file__).resolve().parents[2]

# model-zoo's convention: pretrain, train and inference each run from their one file; these merge over train.yaml
WORKFLOW_FILES = {"evaluate": ["train", "evaluate"], "linear_probe": ["train", "linear_probe"]}


class BundleConfigs:
    """The config files of ``bundles/<name>``: the workflow's file(s) (evaluate and linear probe over ``train.yaml``),
    then ``quick.yaml``.

    Args:
        name: bundle folder name.
        workflow_files: further workflows made of several files, e.g. ``{"x": ["train", "x"]}``.
        root: the bundle folder (default ``bundles/<name>`` of this repository), e.g. a copy of it.
    """

    def __init__(
        self, name: str, workflow_files: Mapping[str, Sequence[str]] | None = None, root: Path | None = None
    ) -> None:
        self.root = Path(root) if root is not None else REPO / "bundles" / name
        self.configs = self.root / "configs"
        self.workflow_files = {**WORKFLOW_FILES, **(workflow_files or {})}

    def files(self, name: str, quick: bool = True) -> list[str]:
        names = [*self.workflow_files.get(name, [name])] + (["quick"] if quick else [])
        return [str(self.configs / f"{n}.yaml") for n in names]

    def config_file_arg(self, name: str, quick: bool = True) -> str:
        """``--config_file`` of ``monai.bundle run``: one path, or a list string of several."""
        files = self.files(name, quick)
        return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"

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
