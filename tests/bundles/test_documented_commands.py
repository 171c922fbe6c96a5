"""Every ``python -m monai.bundle`` command of the docs runs as written: each bundle's ``docs/README.md``, and the
guide pages in ``docs/`` whose commands hold for every bundle (``GUIDES``).

The commands are read from the docs' fenced ``bash`` blocks (``\\`` continuations joined, ``#`` comments dropped) and
from the ``command`` column of their tables (each code span of a cell one command, each row a block of its own). In a
guide, ``<bundle>``, ``<data>`` and ``<images>`` stand for the bundle's name and its documented data folders
(``GUIDE_VALUES``). The commands are turned into a plan by explicit, checked substitutions (the tables below):
``configs/quick.yaml`` merged into every ``--config_file``, one-epoch schedules, ``--num_workers 0``, the docs' data
folders replaced by generated phantoms, the release URL by a loopback server, the full-size ``--input_shape`` of an
export by the quick network's. A documented path or placeholder the table does not know fails the plan, so a new
command cannot go untested unnoticed; a ``monai.bundle`` command the readers miss fails the coverage test.

The slow tests run each bundle's plan in order (the bundle's doc, then the guides), in a copy of the bundle folder:
every block starts in the copy, a ``cd`` inside a block moves the commands after it (the downloaded release's folder).
"""

from __future__ import annotations

import ast
import functools
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from bundle_configs import REPO
from monai.bundle import ConfigParser

BUNDLES = ["btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"]
DOCS = {b: REPO / "bundles" / b / "docs" / "README.md" for b in BUNDLES}
# the guide pages with monai.bundle commands, in the order the plan runs them after a bundle's own doc (the release is
# built from the trained copy at the first download; the exports run in the downloaded release)
GUIDES = [REPO / "docs" / "multi-gpu.md", REPO / "docs" / "export.md"]
# what a guide's placeholders stand for in each bundle: its name and its documented data folders (then mapped by DATA)
GUIDE_VALUES = {
    "btcv_mae_segmentation": {"<data>": "/data/btcv", "<images>": "/data/new_cts"},
    "brats_mae_segmentation": {"<data>": "/data/Task01_BrainTumour", "<images>": "/data/new_mris"},
    "cxr14_mae_classification": {"<data>": "/data/cxr14", "<images>": "/data/new_xrays"},
}

# The substitution table: each documented data folder -> (phantom data set, sub-folder). A path equal to the key or
# under it is mapped; any other /data/..., /tmp/... or <placeholder> left in a command fails the plan.
DATA = {
    "btcv_mae_segmentation": {
        "/data/btcv": ("btcv", ""),
        "/data/new_cts": ("btcv", "imagesTr"),
    },
    "brats_mae_segmentation": {
        "/data/Task01_BrainTumour": ("msd", ""),
        "/tmp/brats_msd": ("msd", ""),
        "/data/BraTS2021/BraTS2021_01001": ("brats2021", "BraTS2021_00000"),
        "/data/new_mris": ("msd", "imagesTs"),
    },
    "cxr14_mae_classification": {
        "/data/cxr14": ("cxr14", ""),
        "/data/chestxray14": ("cxr14", ""),
        "/data/new_cxrs": ("cxr14", "images"),
        "/data/new_xrays": ("cxr14", "images"),
    },
}
# the release URL of the docs, up to the file name -> the loopback server's base URL
RELEASE_URL = "https://github.com/<owner>/<repo>/releases/download/{name}-v<version>"
# one epoch, and a checkpoint and a validation in it (the documented resume continues from that checkpoint)
TRAINING = {"max_epochs": "1", "val_interval": "1", "ckpt_interval": "1"}
LEFTOVER = re.compile(r"<[^<>\s]*>|(?<![\w.])/(data|tmp)/|example\.org")
MONAI_COMMANDS = {"run", "download", "download_large_files", "ckpt_export", "onnx_export"}
MULTI_NODE = ("--nnodes", "--rdzv_endpoint", "--master_addr", "--node_rank")


# reading the docs


def fenced_blocks_at(text: str) -> list[tuple[int, str, list[str]]]:
    """``(opening line, language, lines)`` of every fenced block; ``ValueError`` for a fence left open."""
    blocks, lang, lines, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, lines, start = line[3:].strip(), [], number
            else:
                if line.strip() != "```":
                    raise ValueError(f"line {number}: a fence opens inside the block opened on line {start}")
                blocks.append((start, lang, lines))
                lang = None
        elif lang is not None:
            lines.append(line)
    if lang is not None:
        raise ValueError(f"the fence of line {start} is never closed")
    return blocks


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """``(language, lines)`` of every fenced block; ``ValueError`` for a fence left open."""
    return [(lang, lines) for _, lang, lines in fenced_blocks_at(text)]


def shell_commands(lines: list[str]) -> Iterator[str]:
    """The commands of a bash block, continuations and quotes over several lines joined (comments are dropped when
    split)."""
    buffer = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        command = (buffer + line).strip()
        try:
            words = shlex.split(command, comments=True)
        except ValueError:  # a quoted argument over several lines
            buffer = command + "\n"
            continue
        buffer = ""
        if words:
            yield command
    assert not buffer.strip(), f"unterminated command: {buffer}"


def table_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of every row of the tables outside fenced blocks, the separator rows left out; each
    table opens with ``(0, its header's cells)``. ``\\|`` is a ``|`` inside a cell."""
    in_fence, header = False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.startswith("|"):
            header = None
            continue
        body = line.strip()[1:]
        body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", body)]
        if header is None:
            header = cells
            yield 0, header
        elif not set(line) <= set("|-: "):
            yield number, cells


def command_blocks(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, commands)`` of every bash block and of every row of a table with a ``command`` column (each
    code span of that cell one command), in document order."""
    blocks = [
        (start, list(shell_commands(lines)))
        for start, lang, lines in fenced_blocks_at(text)
        if lang in ("bash", "sh", "shell")
    ]
    column, width = None, 0
    for number, cells in table_rows(text):
        if number == 0:
            column = next((i for i, c in enumerate(cells) if c.split(" ")[0] == "command"), None)
            width = len(cells)
        elif column is not None:
            assert len(cells) == width, f"line {number}: {len(cells)} cells, the header has {width}"
            blocks.append((number, re.findall(r"`([^`]+)`", cells[column])))
    return sorted(blocks)


def documented_commands(doc: Path, values: Mapping[str, str] | None = None) -> list[tuple[str, str, list[str]]]:
    """``(block, command as written, argv)`` of every command in the doc's bash blocks and command tables, in
    document order; ``values`` replaces a guide's placeholders first."""
    text = doc.read_text(encoding="utf-8")
    for placeholder, value in (values or {}).items():
        text = text.replace(placeholder, value)
    name = doc.relative_to(REPO).as_posix()
    out = []
    for number, commands in command_blocks(text):
        out += [(f"{name}:{number}", c, shlex.split(c, comments=True)) for c in commands]
    return out


def guide_values(bundle: str) -> dict[str, str]:
    return {"<bundle>": bundle, **GUIDE_VALUES[bundle]}


def monai_commands(text: str) -> int:
    """How many ``monai.bundle`` commands (with options) the text holds anywhere: the count the readers must reach."""
    commands = r"-m monai\.bundle (?:run|download|download_large_files|ckpt_export|onnx_export)\b[^`\n]* --"
    return len(re.findall(commands, text.replace("\\\n", " ")))


def config_files(value: str) -> list[str]:
    """``--config_file``'s value: one path, or a Python list string of several."""
    return list(ast.literal_eval(value)) if value.startswith("[") else [value]


def config_list(files: list[str]) -> str:
    return files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


def option(argv: list[str], key: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == key and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(key + "="):
            return arg.split("=", 1)[1]
    return None


def set_option(argv: list[str], key: str, value: str) -> list[str]:
    """``argv`` with ``key value`` replacing every given ``key`` (two-token form) or added at the end."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == key:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return [*out, key, value]


# the plan


@dataclass
class Step:
    """One documented command, as the test runs it."""

    block: str  # doc and line
    documented: str
    argv: list[str]  # without the interpreter: ["-m", "monai.bundle", ...] or ["-m", "torch.distributed.run", ...]
    cwd: str  # relative to the copy of the bundle folder
    kind: str  # a monai.bundle command, "cd", or "skip"
    reason: str = ""


@functools.cache
def network_input(bundle: str, quick: bool) -> list[int]:
    """``[1, in_channels, *roi]`` of the inference network (full-size, or with quick.yaml)."""
    configs = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.yaml")] + ([str(configs / "quick.yaml")] if quick else []))
    return [1, parser.get_parsed_content("in_channels"), *parser.get_parsed_content("network_def#img_size")]


def substitute(bundle: str, argv: list[str], data: Mapping[str, Path], base_url: str, version: str) -> list[str]:
    """The documented data folders, bundle folder and release URL replaced (the tables above); ``AssertionError`` for
    a placeholder or path left in a command."""
    table = {**DATA[bundle], f"bundles/{bundle}": ("bundle", "")}
    out = []
    for arg in argv:
        rest = arg  # what no substitution covered
        release = RELEASE_URL.format(name=bundle)
        if arg.startswith(release + "/"):
            arg, rest = base_url + arg[len(release) :], arg[len(release) :]
        arg, rest = arg.replace("<version>", version), rest.replace("<version>", "")
        for placeholder, (dataset, sub) in sorted(table.items(), key=lambda kv: -len(kv[0])):
            if arg == placeholder or arg.startswith(placeholder + "/"):
                rest = arg[len(placeholder) :]
                arg = str(Path(data[dataset], sub, rest.lstrip("/")))
                break
        assert not LEFTOVER.search(rest), f"{bundle}: no substitution for {rest!r} in {' '.join(argv)!r}"
        out.append(arg)
    return out


def substitute_all(bundle: str, argv: list[str], data: Mapping[str, Path], base_url: str, version: str) -> list[str]:
    """:func:`substitute`, also inside a ``--config_file`` list string (``bundles/<name>/configs/...``)."""
    out = []
    for arg in argv:
        if arg.startswith("[") and all(isinstance(f, str) for f in ast.literal_eval(arg)):
            files = substitute(bundle, config_files(arg), data, base_url, version)
            out.append(config_list(files))
        else:
            out += substitute(bundle, [arg], data, base_url, version)
    return out


def plan_run(bundle: str, argv: list[str], config_dir: Path, released: bool = False) -> list[str]:
    """``monai.bundle run``'s arguments (from ``run`` on) with quick.yaml (not in the downloaded release: its configs
    have quick's values baked in), short schedules and no workers."""
    value = option(argv, "--config_file")
    assert value is not None, f"{bundle}: a run without --config_file: {argv}"
    files = config_files(value)
    configs = Path(option(argv, "--bundle_root") or ".", "configs")  # from another folder: <bundle_root>/configs
    for f in files:
        assert (config_dir / Path(f).name).is_file() and Path(f).parent == configs, f"{bundle}: {f}"
    names = [Path(f).stem for f in files]
    if "quick" not in names and not released:  # quick.yaml before the multi-GPU override, as the docs say, else last
        at = names.index("multi_gpu_train") if "multi_gpu_train" in names else len(files)
        files.insert(at, str(configs / "quick.yaml"))
    argv = set_option(argv, "--config_file", config_list(files))
    argv = set_option(argv, "--num_workers", "0")
    if names[0] in ("pretrain", "train") and "evaluate" not in names:
        for key, value in TRAINING.items():
            argv = set_option(argv, f"--{key}", value)
        if option(argv, "--resume") == "true":  # continue past the checkpoint of the run before
            argv = set_option(argv, "--max_epochs", "2")
    return argv


def plan_export(bundle: str, argv: list[str]) -> list[str]:
    """``ckpt_export`` (scripted) / ``onnx_export`` (traced at ``network_data_format``'s input shape of
    ``configs/metadata.json``) as documented: they run in the downloaded release, whose metadata and configs have the
    quick network's values baked in (the quick weights fit no full-size config)."""
    assert option(argv, "--input_shape") is None, f"{bundle}: the shape comes from metadata.json: {argv}"
    assert option(argv, "--config_file") == "configs/inference.yaml", f"{bundle}: {argv}"
    return argv


def plan(bundle: str, data: Mapping[str, Path], base_url: str, nproc: int = 1) -> list[Step]:
    """The steps of the bundle's documented ``monai.bundle`` commands (and the ``cd`` between them), in order."""
    version = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())["version"]
    config_dir = REPO / "bundles" / bundle / "configs"
    steps, cwd, block = [], ".", ""
    commands = documented_commands(DOCS[bundle])
    for guide in GUIDES:
        commands += documented_commands(guide, guide_values(bundle))
    for number, documented, argv in commands:
        if number != block:  # every block starts in the bundle folder
            cwd, block = ".", number
        if argv[0] == "cd":
            cwd = str(Path(cwd, *argv[1:]))
            steps.append(Step(number, documented, argv, cwd, "cd"))
            continue
        if argv[:3] == ["python", "-m", "monai.bundle"]:
            launcher, argv = [], argv[3:]
        elif argv[0] == "torchrun":
            at = argv.index("-m")
            assert argv[at + 1] == "monai.bundle", documented
            launcher, argv = argv[1:at], argv[at + 2 :]
        else:
            continue  # not a monai.bundle command (shared_networks.cli, tensorboard, pip, ...)
        command = argv[0]
        assert command in MONAI_COMMANDS, f"{bundle}: no plan for 'monai.bundle {command}': {documented}"
        if command != "run":
            assert not launcher, documented
        root = option(argv, "--bundle_root")
        released = cwd != "." or root == bundle  # in, or pointing at, the release downloaded into the copy
        if command == "run":
            argv = plan_run(bundle, argv, config_dir, released)
        elif command in ("ckpt_export", "onnx_export"):
            argv, cwd = plan_export(bundle, argv), bundle
        if launcher and any(a.split("=")[0] in MULTI_NODE for a in launcher):
            reason = "several machines: needs a second machine; its config list is checked, one machine runs it"
            steps.append(Step(number, documented, argv, cwd, "skip", reason))
            continue
        argv = substitute_all(bundle, argv, data, base_url, version)
        if launcher:
            assert launcher[0] == "--standalone" and all(a.startswith("--nproc_per_node=") for a in launcher[1:])
            argv = [
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={nproc}",
                "-m",
                "monai.bundle",
                *argv,
            ]
        else:
            argv = ["-m", "monai.bundle", *argv]
        steps.append(Step(number, documented, argv, cwd, command))
    return steps


# fast checks of every doc


GUIDE_DOCS = sorted((REPO / "docs").glob("*.md"))
ALL_DOCS = [REPO / "README.md", *DOCS.values(), *GUIDE_DOCS]


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_fences_are_balanced(doc):
    text = doc.read_text(encoding="utf-8")
    fenced_blocks(text)
    assert sum(line.startswith("```") for line in text.splitlines()) % 2 == 0


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_config_file_named_in_the_doc_exists(bundle):
    """Every ``configs/<file>`` the doc names (commands and prose), and every ``--config_file`` list, exists."""
    text = DOCS[bundle].read_text(encoding="utf-8")
    configs = REPO / "bundles" / bundle / "configs"
    named = set(re.findall(r"(?<![\w/<])configs/([\w.]+\.(?:yaml|json|conf))", text))
    assert {"pretrain.yaml", "train.yaml", "evaluate.yaml", "inference.yaml", "quick.yaml"} <= named
    assert [n for n in sorted(named) if not (configs / n).is_file()] == []
    for _, documented, argv in documented_commands(DOCS[bundle]):
        value = option(argv, "--config_file")
        if value is not None:
            folder = Path(option(argv, "--bundle_root") or ".", "configs")
            for f in config_files(value):
                assert (configs / Path(f).name).is_file() and Path(f).parent == folder, documented


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_and_file_named_in_the_doc_exists(doc):
    """``python -m <module>`` lines name modules that import; repository paths named in the text exist."""
    text = doc.read_text(encoding="utf-8")
    for module in sorted(set(re.findall(r"python -m ((?:shared_networks|monai)[\w.]*\w)", text))):
        assert importlib.util.find_spec(module) is not None, f"{doc}: python -m {module}"
    paths = re.findall(r"`((?:shared_networks|tests|scripts|benchmarks)/[\w/.]+\.(?:py|sh|md))`", text)
    for path in sorted(set(paths)):
        assert (REPO / path).is_file(), f"{doc}: {path}"
    for stale in (
        "common.yaml",
        "multi_gpu.yaml",
        "shared_networks.data.btcv",
        "shared_networks/handlers.py",
        "shared_networks/distributed.py",
    ):
        assert stale not in text, f"{doc}: {stale}"


@pytest.mark.parametrize("guide", GUIDE_DOCS, ids=lambda p: p.name)
def test_every_config_file_named_in_a_guide_exists(guide):
    """A guide's ``configs/<file>`` exists in some bundle; the config files of its commands exist in every bundle
    (they run in each)."""
    text = guide.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/<])configs/([\w.]+\.(?:yaml|json|conf))", text))
    unknown = [n for n in named if not any((REPO / "bundles" / b / "configs" / n).is_file() for b in BUNDLES)]
    assert unknown == [], f"{guide}: {unknown}"
    for bundle in BUNDLES:
        for _, documented, argv in documented_commands(guide, guide_values(bundle)):
            value = option(argv, "--config_file")
            for f in config_files(value) if value else []:
                assert (REPO / "bundles" / bundle / "configs" / Path(f).name).is_file(), f"{bundle}: {documented}"


# README.md's one monai.bundle command is the generic pattern (`--dataset_dir <data in its public layout>`); each
# bundle's own instances of it are in its commands table and planned there
UNPLANNED = {"README.md": 1}


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_the_readers_find_every_monai_bundle_command(doc):
    """Every ``monai.bundle`` command written anywhere in a doc (prose, tables, fenced blocks) is one the readers
    extract, and only the bundles' docs and the ``GUIDES`` hold such commands: none can be left out of the plan."""
    text = doc.read_text(encoding="utf-8")
    found = [c for _, c, argv in documented_commands(doc) if "monai.bundle" in argv]
    assert len(found) == monai_commands(text), f"{doc}: commands outside a bash block or a command table"
    name = doc.relative_to(REPO).as_posix()
    if doc not in DOCS.values() and doc not in GUIDES:
        assert len(found) == UNPLANNED.get(name, 0), f"{name} holds monai.bundle commands: add it to GUIDES"


def test_the_plan_holds_every_command_of_the_docs():
    """Each bundle's plan has one step per command of its doc and of the guides (``cd`` included), in their order."""
    data = {k: Path("/phantoms", k) for k in ("btcv", "msd", "brats2021", "cxr14", "bundle")}
    for bundle in BUNDLES:
        commands = documented_commands(DOCS[bundle])
        for guide in GUIDES:
            commands += documented_commands(guide, guide_values(bundle))
        expected = [c for _, c, argv in commands if argv[0] == "cd" or "monai.bundle" in argv]
        steps = plan(bundle, data, "http://127.0.0.1:1")
        assert [s.documented for s in steps] == expected, bundle
        assert {s.block.split(":")[0] for s in steps} == {DOCS[bundle].relative_to(REPO).as_posix()} | {
            g.relative_to(REPO).as_posix() for g in GUIDES
        }


def test_a_command_table_is_read():
    """Each code span of a ``command`` cell is a command, each row a block; other tables are not read."""
    text = "\n".join(
        [
            "| workflow | command |",
            "|---|---|",
            "| a | `python -m monai.bundle run --config_file configs/train.yaml` |",
            "| b | `cd x` then `python -m monai.bundle run --config_file configs/inference.yaml` |",
            "",
            "| file | what |",
            "|---|---|",
            "| `python -m monai.bundle run --x 1` | not a command column |",
        ]
    )
    blocks = command_blocks(text)
    assert [b[0] for b in blocks] == [3, 4]
    assert blocks[1][1] == ["cd x", "python -m monai.bundle run --config_file configs/inference.yaml"]
    assert monai_commands(text) == 3  # the third, outside a command column, would fail the coverage test


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_documented_command_has_a_plan(bundle):
    """The substitution table covers every monai.bundle command of the doc (no unknown placeholder, no unknown
    command), each ``run`` gets quick.yaml and short schedules, and the multi-machine launches are the only skips."""
    data = {k: Path("/phantoms", k) for k in ("btcv", "msd", "brats2021", "cxr14", "bundle")}
    steps = plan(bundle, data, "http://127.0.0.1:1")
    runs = [s for s in steps if s.kind == "run"]
    assert len(runs) >= 5
    for s in runs:
        released = s.cwd != "." or option(s.argv, "--bundle_root") == bundle
        assert ("quick.yaml" in option(s.argv, "--config_file")) != released, s.documented
        assert option(s.argv, "--num_workers") == "0"
    assert sum(s.cwd == bundle for s in runs) >= 1 and sum(option(s.argv, "--bundle_root") == bundle for s in runs) >= 1
    assert all(s.cwd == bundle for s in steps if s.kind in ("ckpt_export", "onnx_export"))
    assert {s.kind for s in steps} >= {"run", "download", "download_large_files", "ckpt_export", "onnx_export"}
    assert all("--nnodes" in s.documented for s in steps if s.kind == "skip")


def test_an_unknown_placeholder_fails_the_plan():
    with pytest.raises(AssertionError, match="no substitution"):
        substitute("btcv_mae_segmentation", ["run", "--dataset_dir", "/data/other"], {}, "http://x", "0")
    with pytest.raises(AssertionError, match="no substitution"):
        substitute("btcv_mae_segmentation", ["run", "--url", "<url>"], {}, "http://x", "0")


# the slow runs


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: D102
        pass


def write_data(bundle: str, folder: Path) -> dict[str, Path]:
    """Tiny phantom data sets, each on its quick.yaml grid, enough for every split the workflows read."""
    from shared_networks.synthetic.brain import write_brats2021_phantom_dataset, write_msd_phantom_dataset
    from shared_networks.synthetic.ct import write_btcv_phantom_dataset
    from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

    if bundle == "btcv_mae_segmentation":
        return {"btcv": write_btcv_phantom_dataset(folder / "btcv", num_cases=5, shape=(64, 64, 48), seed=3)}
    if bundle == "brats_mae_segmentation":
        brain = dict(shape=(56, 64, 48), spacing=(3.0, 3.0, 3.0), seed=3)
        return {
            "msd": write_msd_phantom_dataset(folder / "msd", num_cases=5, num_unlabelled=1, **brain),
            "brats2021": write_brats2021_phantom_dataset(folder / "brats2021", num_cases=1, num_unlabelled=0, **brain),
        }
    return {"cxr14": write_cxr14_phantom_dataset(folder / "cxr14", num_patients=24, size=64, seed=3)}


def env() -> dict[str, str]:
    """The user's environment: this checkout's package importable, one thread per process."""
    import shared_networks

    package = str(Path(shared_networks.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": package, "OMP_NUM_THREADS": "1"}


def build_release(bundle: Path, dist: Path, base_url: str) -> None:
    """The release of the quick-trained copy, as the docs' export command builds it: a light zip (weights fetched by
    ``download_large_files``) and the weight files, with URLs under ``base_url``."""
    cmd = [
        sys.executable,
        "-m",
        "shared_networks.cli.export",
        str(bundle),
        "--out",
        str(dist),
        "--base_url",
        base_url,
        "--config_overrides",
        "['configs/quick.yaml']",
        "--weights_in_zip",
        "false",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env(), capture_output=True, encoding="utf-8", errors="replace", timeout=600
    )
    assert proc.returncode == 0, f"export failed:\n{(proc.stdout + proc.stderr)[-6000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_documented_commands_run(bundle, tmp_path):
    copy = tmp_path / "work" / bundle
    shutil.copytree(REPO / "bundles" / bundle, copy, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
    data = {**write_data(bundle, tmp_path / "data"), "bundle": copy}
    dist = tmp_path / "dist"
    dist.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    times, released = [], False
    try:
        for step in plan(bundle, data, base_url):
            if step.kind in ("cd", "skip"):
                times.append((step.documented, step.reason or step.kind))
                continue
            if step.kind == "download" and not released:
                build_release(copy, dist, base_url)
                released = True
            cwd = copy / step.cwd
            assert cwd.is_dir(), f"{step.documented}: no folder {step.cwd} (block {step.block})"
            start = time.monotonic()
            proc = subprocess.run(
                [sys.executable, *step.argv],
                cwd=cwd,
                env=env(),
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=600,
            )
            output = proc.stdout + proc.stderr
            assert proc.returncode == 0, (
                f"documented: {step.documented}\nran in {step.cwd}: {shlex.join(step.argv)}\n{output[-6000:]}"
            )
            times.append((step.documented, f"{time.monotonic() - start:.0f} s"))
    finally:
        server.shutdown()
        server.server_close()
        print("\n".join(f"{t:>8}  {c[:110]}" for c, t in times))
    assert released == any("download --" in c for c, _ in times)
    assert (copy / "models" / "model.pt").is_file() and (copy / "runs" / "evaluate" / "summary.json").is_file()
    assert (copy / bundle / "models" / "model.pt").is_file()  # the downloaded release got its weights
    assert not (REPO / "bundles" / bundle / "models").exists() or REPO not in copy.parents
