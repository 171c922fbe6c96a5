"""What the bundle configs compute, against a snapshot: every workflow combination the bundles document, parsed, and
every plain setting and every evaluated ``$`` expression or ``@`` reference recorded as a plain value.

Combinations: ``pretrain.yaml``, ``train.yaml`` and ``inference.yaml`` alone; ``evaluate.yaml`` (and the chest X-ray
``linear_probe.yaml``) merged over ``train.yaml``; then ``quick.yaml``, ``small_data.yaml`` (chest X-ray) and
``multi_gpu_train.yaml`` merged last, and ``mlflow.yaml`` given as MONAI's tracking settings (``--tracking``).

What is evaluated: settings, ``@`` references and ``$`` expressions, except the ``initialize``, ``run`` and
``finalize`` steps (their values are side effects) and expressions that would build a network, an optimiser, an
engine or a handler (their raw text is recorded instead). Datasets, loaders, samplers, transforms and inferers are
built: the datalist and inference-input functions are replaced by stubs that record their arguments, nothing is read
from disk (``CacheDataset`` fills no cache), CUDA is hidden (the device is the CPU), ``multi_gpu_train.yaml`` runs in
a one-process gloo group (rank 0 of 1). Objects are recorded as their class and a few telling attributes, callables
as their name; an ``output_transform`` as what it returns for an engine output ``{'loss': ..., 'pred': ...,
'label': ...}``.

The snapshot, ``config_values.json`` beside this file, was taken from the configs before their logic moved into
``shared_networks`` functions; regenerate it (only when a config value is meant to change) with

    .venv/bin/python tests/bundles/test_config_values.py

and review the diff of ``tests/bundles/config_values.json``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import locale
import re
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bundle_configs, when run as a script

from bundle_configs import REPO, BundleConfigs  # noqa: E402
from monai.bundle import ConfigParser, ConfigWorkflow  # noqa: E402
from monai.data import CacheDataset  # noqa: E402

import shared_networks  # noqa: E402

SNAPSHOT = Path(__file__).resolve().parent / "config_values.json"
BUNDLES = ("btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification")
SECTIONS = ("imports", "initialize", "run", "finalize")  # steps, not values
TRAINING = ("pretrain", "train", "linear_probe")
# components the walker may build while it evaluates an expression (data and inferers, nothing that trains or writes)
BUILDABLE = re.compile(
    r"^(shared_networks\.)?(\w+d|Dataset|CacheDataset|DataLoader|DistributedSampler|Compose|ComposeWithoutMeta"
    r"|BatchAugment2d|\w*Inferer)$"
)
SIZES = {"training": 40, "validation": 6, "test": 5, "pretrain": 45}  # stub datalist: > and < the batch sizes
LONG = 8  # lists longer than this are recorded as their length and their ends
TIMESTAMP = re.compile(r"config_\d{8}_\d{6}\.json")
PROBE = {"loss": torch.tensor(0.25), "pred": torch.tensor([0.5]), "label": torch.tensor([1.0])}


def workflows(bundle: str) -> list[str]:
    return ["pretrain", "train", "inference", "evaluate"] + (["linear_probe"] if bundle.startswith("cxr14") else [])


def combinations(bundle: str) -> list[tuple[str, list[str], dict]]:
    """``(name, config files, options)`` of every documented combination; options: ``num_workers``, ``tracking``."""
    overlays = [[], ["quick"]] + ([["small_data"]] if bundle.startswith("cxr14") else [])
    out = []
    for wf in workflows(bundle):
        base = {"evaluate": ["train", "evaluate"], "linear_probe": ["train", "linear_probe"]}.get(wf, [wf])
        for overlay in overlays:
            out.append((base + overlay, {}))
            if wf in TRAINING:
                out.append((base + overlay + ["multi_gpu_train"], {}))
        out.append((base, {"num_workers": 2}))
        out.append((base, {"tracking": True}))
        out.append((base + ["quick"], {"tracking": True}))
        if wf in TRAINING:
            out.append((base + ["multi_gpu_train"], {"tracking": True}))
    return [("+".join(files) + "".join(f" {k}={v}" for k, v in opts.items()), files, opts) for files, opts in out]


# stubs: what the datalist and input functions were asked, no data read


def _datalist_stub(name: str):
    def stub(*args: Any, **kwargs: Any) -> dict:
        lists = {
            split: [{"image": f"{split}{i}.nii.gz", "label": f"{split}{i}_seg.nii.gz"} for i in range(n)]
            for split, n in SIZES.items()
        }
        return {**lists, "called": {"function": name, "args": list(args), "kwargs": kwargs}}

    return stub


def _inputs_stub(name: str, items: bool = False):
    def stub(path: Any) -> list:
        paths = [f"{path}/{name}{i}" for i in range(3)]
        return [{"image": p, "layout": "msd"} for p in paths] if items else paths

    return stub


def _cache_rate_stub(items: Any, cache_rate: Any, *args: Any, **kwargs: Any) -> float:
    """``cache_rate_for`` without the headers: ``auto`` caches every case, a number is used as given."""
    return 1.0 if cache_rate == "auto" else float(cache_rate)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """A one-process gloo group (rank 0 of 1), as torchrun's rank 0 sees it."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def stubbed() -> Iterator[None]:
    """Datalists, inference inputs and the cache sizing stubbed, no cache filled, no CUDA, UTF-8 config reading."""
    saved = locale.setlocale(locale.LC_CTYPE)
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")  # the BraTS configs hold non-ASCII text
    patches = [
        mock.patch.object(shared_networks, "btcv_datalist", _datalist_stub("btcv_datalist")),
        mock.patch.object(shared_networks, "brats_datalist", _datalist_stub("brats_datalist")),
        mock.patch.object(shared_networks, "cxr14_datalist", _datalist_stub("cxr14_datalist")),
        mock.patch.object(shared_networks, "list_image_inputs", _inputs_stub("image")),
        mock.patch.object(shared_networks, "list_xray_inputs", _inputs_stub("xray")),
        mock.patch.object(shared_networks, "brats_inference_inputs", _inputs_stub("case", items=True)),
        mock.patch.object(shared_networks, "cache_rate_for", _cache_rate_stub),
        mock.patch.object(CacheDataset, "_fill_cache", lambda self, indices=None: [None] * len(indices or [])),
        mock.patch.object(torch.cuda, "is_available", lambda: False),
    ]
    try:
        with contextlib.ExitStack() as stack, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for p in patches:
                stack.enter_context(p)
            yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


# the walk


class Walker:
    """The recorded values of one parsed config."""

    def __init__(self, parser: ConfigParser, replace: dict[str, str]) -> None:
        self.parser = parser
        self.replace = sorted(replace.items(), key=lambda kv: -len(kv[0]))  # longest path first
        self.safe_memo: dict[str, bool] = {}

    # what may be evaluated

    def _refs(self, text: str) -> list[str]:
        return [r.replace("::", "#") for r in re.findall(r"@([\w#:]+)", text)]

    def _node_safe(self, node: Any) -> bool:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not (isinstance(target, str) and BUILDABLE.match(target)):
                return False
            return all(self._node_safe(v) for v in node.values())
        if isinstance(node, list):
            return all(self._node_safe(v) for v in node)
        if isinstance(node, str) and node.startswith(("$", "@")):
            return all(self.safe(r) for r in self._refs(node))
        return True

    def safe(self, id_: str) -> bool:
        """Whether evaluating ``id_`` builds only data, loaders, transforms and inferers."""
        if id_ not in self.safe_memo:
            self.safe_memo[id_] = False  # a reference cycle is not evaluated
            try:
                node = self.parser[id_]
            except (KeyError, IndexError, ValueError, TypeError):
                self.safe_memo[id_] = True  # an unknown reference: evaluating it records MONAI's error
                return True
            self.safe_memo[id_] = self._node_safe(node)
        return self.safe_memo[id_]

    # plain values

    def text(self, s: str) -> str:
        for old, new in self.replace:
            s = s.replace(old, new)
        return TIMESTAMP.sub("config_<time>.json", s)

    def plain(self, value: Any, id_: str = "") -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Path):
            return self.text(str(value))
        if isinstance(value, dict):
            return {str(k): self.plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            items = [self.plain(v) for v in value]
            return items if len(items) <= LONG else {"len": len(items), "first": items[0], "last": items[-1]}
        if isinstance(value, torch.Tensor):
            return self.plain(value.tolist())
        if isinstance(value, (torch.device, torch.dtype)):
            return {type(value).__name__: str(value)}
        if isinstance(value, type):
            return {"class": value.__name__}
        if hasattr(value, "dtype") and type(value).__module__ == "numpy":
            return self.plain(value.item())
        if id_.endswith("output_transform") and callable(value):
            try:
                return {"output_transform": self.plain(value(dict(PROBE)))}
            except Exception as err:  # noqa: BLE001 - the failure is the recorded value
                return {"output_transform": {"error": type(err).__name__}}
        if inspect.isroutine(value) or isinstance(value, functools.partial):
            return {"callable": getattr(value, "__name__", type(value).__name__)}
        if isinstance(value, torch.utils.data.DataLoader):
            return {
                "object": type(value).__name__,
                "len": len(value),
                "batch_size": value.batch_size,
                "drop_last": value.drop_last,
                "num_workers": value.num_workers,
                "sampler": type(value.sampler).__name__,
            }
        if isinstance(value, torch.utils.data.Dataset):
            out = {"object": type(value).__name__, "len": len(value)}  # type: ignore[arg-type]
            return {**out, "cache_num": value.cache_num} if isinstance(value, CacheDataset) else out
        if isinstance(value, torch.utils.data.Sampler):
            return {"object": type(value).__name__, "len": len(value)}  # type: ignore[arg-type]
        return {"object": type(value).__name__}

    def evaluate(self, id_: str) -> Any:
        try:
            return self.plain(self.parser.get_parsed_content(id_), id_)
        except Exception as err:  # noqa: BLE001 - the failure is the recorded value
            return {"error": type(err).__name__}

    def record(self, node: Any, id_: str, out: dict[str, Any]) -> None:
        if isinstance(node, str) and node.startswith(("$", "@", "%")):
            raw = self.text(node).replace("::", "#")  # MONAI rewrites the ids of references it has parsed
            out[id_] = self.evaluate(id_) if self.safe(id_) else {"not evaluated": raw}
        elif isinstance(node, dict) and (node.get("_target_") is not None or not self._is_data(node)):
            for k, v in node.items():
                self.record(v, f"{id_}#{k}" if id_ else str(k), out)
        elif isinstance(node, list) and not self._is_data(node):
            for i, v in enumerate(node):
                self.record(v, f"{id_}#{i}", out)
        else:
            out[id_] = self.plain(node)

    def _is_data(self, node: Any) -> bool:
        if isinstance(node, dict):
            return "_target_" not in node and all(self._is_data(v) for v in node.values())
        if isinstance(node, list):
            return all(self._is_data(v) for v in node)
        return not (isinstance(node, str) and node.startswith(("$", "@", "%")))

    def values(self) -> dict[str, Any]:
        config = self.parser.get()
        out: dict[str, Any] = {}
        for key, node in config.items():
            if key not in SECTIONS:
                self.record(node, str(key), out)
        return out


def combination_values(bundle: str, files: list[str], options: dict, tmp: Path) -> dict[str, Any]:
    """The recorded values of one combination (inside :func:`stubbed`)."""
    configs = BundleConfigs(bundle)
    root = tmp / "bundle"
    parser = ConfigParser()
    parser.read_config([str(configs.configs / f"{n}.yaml") for n in files])
    parser.update({"bundle_root": str(root), "num_workers": options.get("num_workers", 0)})
    if options.get("tracking"):
        settings = ConfigParser.load_config_files(str(configs.configs / "mlflow.yaml"))
        ConfigWorkflow.patch_bundle_tracking(parser, settings)  # writes the config into output_dir (under root)
    walker = Walker(parser, {str(root): "<bundle_root>", str(REPO): "<repo>", str(tmp): "<tmp>"})
    with _process_group() if "multi_gpu_train" in files else contextlib.nullcontext():
        return walker.values()


def bundle_values(bundle: str) -> dict[str, dict[str, Any]]:
    out = {}
    with stubbed():
        for name, files, options in combinations(bundle):
            with tempfile.TemporaryDirectory() as tmp:
                out[name] = combination_values(bundle, files, options, Path(tmp))
    return out


def pack(values: dict[str, dict[str, Any]], bundle: str) -> dict[str, Any]:
    """The stored form: each workflow's file(s) alone in full, every other combination as what it changes of that."""
    packed: dict[str, Any] = {}
    for name, base in _bases(bundle).items():
        got = values[name]
        if base == name:
            packed[name] = got
            continue
        full = values[base]
        changed = {k: v for k, v in got.items() if k not in full or full[k] != v}
        packed[name] = {"over": base, "changed": changed, "removed": sorted(k for k in full if k not in got)}
    return packed


def unpack(packed: dict[str, Any], bundle: str) -> dict[str, dict[str, Any]]:
    out = {}
    for name, base in _bases(bundle).items():
        if name not in packed:
            continue
        entry = packed[name]
        if base == name:
            out[name] = entry
        else:
            full = {k: v for k, v in out[base].items() if k not in entry["removed"]}
            out[name] = {**full, **entry["changed"]}
    return out


def _bases(bundle: str) -> dict[str, str]:
    """Each combination's name -> the name of its workflow's file(s) alone (listed first)."""
    first: dict[str, str] = {}
    out = {}
    for name, files, _ in combinations(bundle):
        wf = "+".join(f for f in files if f not in ("quick", "small_data", "multi_gpu_train"))
        out[name] = first.setdefault(wf, name)
    return out


def _differences(expected: dict, got: dict) -> list[str]:
    lines = []
    for name in sorted(set(expected) | set(got)):
        if name not in got or name not in expected:
            lines.append(f"{name}: {'missing' if name not in got else 'not in the snapshot'}")
            continue
        e, g = expected[name], got[name]
        for id_ in sorted(set(e) | set(g)):
            if e.get(id_, "<absent>") != g.get(id_, "<absent>"):
                lines.append(f"{name}: {id_}: snapshot {e.get(id_, '<absent>')!r}, now {g.get(id_, '<absent>')!r}")
    return lines


@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_compute_the_snapshot_values(bundle):
    expected = unpack(json.loads(SNAPSHOT.read_text(encoding="utf-8"))["bundles"][bundle], bundle)
    got = json.loads(json.dumps(bundle_values(bundle)))  # as stored: tuples as lists
    diff = _differences(expected, got)
    assert not diff, "config values changed (regenerate only on purpose, see the module docs):\n" + "\n".join(diff[:60])


def test_every_config_file_is_in_a_combination():
    for bundle in BUNDLES:
        used = {f for _, files, opts in combinations(bundle) for f in files} | {"mlflow"}
        present = {p.stem for p in (REPO / "bundles" / bundle / "configs").glob("*.yaml")}
        assert present == used, bundle


def dumps(data: dict[str, Any]) -> str:
    """The snapshot as JSON, one recorded id per line (its value compact), combinations and bundles indented."""

    def ids(values: dict[str, Any], pad: str) -> str:
        rows = [f"{pad} {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(values.items())]
        return "{\n" + ",\n".join(rows) + f"\n{pad}}}" if rows else "{}"

    def combination(entry: dict[str, Any], pad: str) -> str:
        if "over" not in entry:
            return ids(entry, pad)
        rows = [
            f'{pad} "over": {json.dumps(entry["over"])}',
            f'{pad} "changed": {ids(entry["changed"], pad + " ")}',
            f'{pad} "removed": {json.dumps(entry["removed"])}',
        ]
        return "{\n" + ",\n".join(rows) + f"\n{pad}}}"

    bundles = []
    for bundle, combos in data["bundles"].items():
        rows = [f"   {json.dumps(name)}: {combination(entry, '   ')}" for name, entry in combos.items()]
        bundles.append(f"  {json.dumps(bundle)}: {{\n" + ",\n".join(rows) + "\n  }")
    return f'{{\n "command": {json.dumps(data["command"])},\n "bundles": {{\n' + ",\n".join(bundles) + "\n }\n}\n"


def main() -> None:
    data = {
        "command": "python tests/bundles/test_config_values.py",
        "bundles": {b: pack(json.loads(json.dumps(bundle_values(b))), b) for b in BUNDLES},
    }
    text = dumps(data)
    assert json.loads(text) == data  # internal invariant of the writer
    SNAPSHOT.write_text(text, encoding="utf-8")
    print(f"wrote {SNAPSHOT} ({sum(len(v) for v in data['bundles'].values())} combinations)")


if __name__ == "__main__":
    main()
