"""Command-line overrides that match no setting: an error before the workflow reads anything.

``python -m monai.bundle run --config_file configs/train.yaml --base_lr 0.1`` merges the config files and then sets
every ``--key value`` pair, existing or not: a key that is no setting (a typo, a setting of another workflow) adds an
unused entry and changes nothing. MONAI's runner does not tell the config which keys came from the command line, so
:func:`check_overrides`, the first step of every workflow's ``initialize``, reads them from ``sys.argv`` the way
MONAI's ``fire`` command line does, and compares them with the keys of the config files being run.

It only acts in a process started as ``python -m monai.bundle run`` (or ``run_workflow``; ``torchrun -m monai.bundle
run`` starts its workers so too). Overrides given from Python (``ConfigWorkflow(**override)``,
``monai.bundle.run(**override)``, MONAI Label's single-process training) are not on the command line: they are not
checked.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

__all__ = [
    "ALLOW_ENV",
    "RUN_ARGUMENTS",
    "check_overrides",
    "cli_overrides",
    "config_ids",
    "OverrideReport",
    "find_unknown_overrides",
    "has_id",
]

# the keyword arguments of monai.bundle's `run` / `run_workflow`, `create_workflow` and `ConfigWorkflow`: consumed by
# the runner, never set in the config
RUN_ARGUMENTS = frozenset(
    {
        "run_id",
        "init_id",
        "final_id",
        "meta_file",
        "config_file",
        "logging_file",
        "tracking",
        "args_file",
        "workflow_name",
        "workflow_type",
        "properties_path",
    }
)
_POSITIONAL = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")
_COMMANDS = ("run", "run_workflow")
# set to 1 to let new keys through (a warning instead of the error), e.g. a new key that another override refers to
ALLOW_ENV = "SHARED_NETWORKS_ALLOW_NEW_SETTINGS"
META_KEY = "_meta_"
SEP = "#"
# top-level entries MONAI's runner reads itself (a workflow's sections); any other top-level entry acts only when a
# reference (``@key``, ``%key``) uses it
RUNNER_KEYS = frozenset({"imports", "initialize", "run", "finalize", META_KEY})
_REFERENCE = re.compile(r"[@%]([A-Za-z_]\w*)")


def _normalize(key: str) -> str:
    return str(key).replace("::", SEP)


def _is_flag(arg: str) -> bool:
    # fire.core._IsFlag: "--x", "-x", "-x=..." are flags; "-1", "-0.5" are values
    return arg.startswith("--") or (len(arg) > 1 and arg[0] == "-" and arg[1].isalpha())


def _parse_value(value: str) -> Any:
    # what fire makes of a value, as far as the keys this module reads need it (lists, dicts, strings)
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def cli_overrides(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The keyword arguments ``python -m monai.bundle run`` was given, parsed as ``fire`` parses them.

    ``--key value``, ``--key=value``, ``-k value``, a bare ``--flag`` (``True``) and ``--noflag`` (``flag=False``);
    hyphens in keys become underscores; arguments after the last ``--`` are fire's own flags; positional arguments
    fill ``run_id``, ``init_id``, ... in order. Values are kept as fire would pass them (Python literals parsed).

    Args:
        argv: the process's arguments, ``sys.argv`` by default.

    Returns:
        ``None`` when the process was not started as ``python -m monai.bundle run`` (or ``run_workflow``); otherwise
        every keyword, runner arguments (``config_file``, ...) included, with its value.
    """
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in _COMMANDS:
        return None
    main = Path(argv[0])
    if not (main.name == "__main__.py" and main.parent.name == "bundle" and main.parent.parent.name == "monai"):
        return None
    args = argv[2:]
    if "--" in args:
        args = args[: len(args) - 1 - args[::-1].index("--")]
    kwargs: dict[str, Any] = {}
    positional: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if not _is_flag(arg):
            positional.append(arg)
            continue
        stripped = arg.lstrip("-")
        has_equals = "=" in arg
        key, value = stripped.split("=", 1) if has_equals else (stripped, None)
        key = key.replace("-", "_")
        is_bool = not has_equals and (i + 1 == len(args) or _is_flag(args[i + 1]))
        if has_equals:
            kwargs[key] = _parse_value(value)
        elif is_bool:
            if key.startswith("no") and key not in _POSITIONAL:  # fire: --noflag is flag=False
                kwargs[key[2:]] = False
            else:
                kwargs[key] = True
        else:
            kwargs[key] = _parse_value(args[i + 1])
            skip = True
    if argv[1] == "run":
        for name, value in zip(_POSITIONAL, positional, strict=False):
            kwargs.setdefault(name, value)
    return kwargs


def has_id(config: Any, key: str) -> bool:
    """Whether ``key`` (``a#b#0#c``, ``::`` too) names an entry of the nested dicts and lists ``config``."""
    node = config
    for part in _normalize(key).split(SEP):
        if isinstance(node, Mapping):
            if part not in node:
                return False
            node = node[part]
        elif isinstance(node, (list, tuple)):
            try:
                index = int(part)
            except ValueError:
                return False
            if not -len(node) <= index < len(node):
                return False
            node = node[index]
        else:
            return False
    return True


def config_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """Every id of the nested dicts and lists ``config``, parents before children (``a``, ``a#b``, ``a#0``, ...)."""
    items: Any = config.items() if isinstance(config, Mapping) else enumerate(config)
    for k, v in items:
        key = f"{prefix}{k}"
        yield key
        if isinstance(v, (Mapping, list, tuple)):
            yield from config_ids(v, key + SEP)


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parsed = _parse_value(value) if value.lstrip().startswith(("[", "(")) else value
        value = parsed
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


def _tracking_settings(tracking: Any) -> dict:
    if tracking is None:
        return {}
    if isinstance(tracking, Mapping):
        return dict(tracking)
    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        return dict(DEFAULT_EXP_MGMT_SETTINGS[tracking])
    return dict(ConfigParser.load_config_files(_files(tracking)))


def _is_tracking_file(content: Any) -> bool:
    return isinstance(content, Mapping) and "handlers_id" in content and "configs" in content


def _tracking_keys(settings: Mapping) -> dict:
    """The top-level entries a tracking-settings file adds to the config (MONAI's ``patch_bundle_tracking``)."""
    handlers = settings.get("handlers_id", {}) or {}
    added = {k: v for k, v in (settings.get("configs", {}) or {}).items() if k not in handlers}
    return {**added, "output_dir": None, "save_execute_config": None}


def _referenced(config: Any) -> set[str]:
    """The top-level keys that ``@key`` / ``%key`` references anywhere in ``config`` name."""
    found: set[str] = set()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, str):
            found.update(_REFERENCE.findall(node))
    return found


def _suggest(key: str, ids: Sequence[str], n: int = 3) -> list[str]:
    leaf = key.rsplit(SEP, 1)[-1]
    same_leaf = [i for i in ids if i.rsplit(SEP, 1)[-1] == leaf and i != key]
    close = difflib.get_close_matches(key, ids, n=n, cutoff=0.6)
    if SEP in key:  # a sibling under the same existing parent: train#trainer#max_epoch -> train#trainer#max_epochs
        parent = key.rsplit(SEP, 1)[0]
        children = [i.rsplit(SEP, 1)[-1] for i in ids if i.rsplit(SEP, 1)[0] == parent and SEP in i]
        close = [f"{parent}{SEP}{c}" for c in difflib.get_close_matches(leaf, children, n=n, cutoff=0.6)] + close
    else:  # a top-level typo: compare with the top-level keys first (nested ids are many and long)
        tops = [i for i in ids if SEP not in i]
        close = difflib.get_close_matches(key, tops, n=n, cutoff=0.6) + close
    return list(dict.fromkeys(same_leaf + close))[:n]


class OverrideReport(NamedTuple):
    """What :func:`find_unknown_overrides` found: ``errors`` (keys that are no setting of the files run) and
    ``warnings`` (keys set by a file run, e.g. quick.yaml, that nothing in the files run refers to)."""

    errors: list[str]
    warnings: list[str]


def find_unknown_overrides(
    overrides: Mapping[str, Any],
    config_file: Any,
    meta_file: Any = None,
    tracking: Any = None,
) -> OverrideReport:
    """The override keys that match no setting of ``config_file`` (merged as MONAI merges them).

    Accepted: any existing id, nested (``train#trainer#max_epochs``, ``::`` too) or into a list
    (``train#handlers#0#interval``); ``+key`` (MONAI merges it into ``key``) when ``key`` exists; ids under ``_meta_``
    when a metadata file is read; the entries ``--tracking`` adds (its settings' ``configs``, ``output_dir``,
    ``save_execute_config``). The runner's own arguments (:data:`RUN_ARGUMENTS`) are not passed here.

    Args:
        overrides: the override keys (values are not looked at).
        config_file: the config file or files run (a list, or the command line's ``"['a.yaml','b.yaml']"``).
        meta_file: the metadata file(s); ``configs/metadata.json`` beside the first config file when ``None``.
        tracking: ``--tracking``'s value (``mlflow``, a settings file, or a dict), or ``None``.

    Returns:
        ``errors``: a message per unknown key, naming the closest existing keys (``difflib``), or the bundle's other
        config file that has the key (``--mae_base_lr`` given to train.yaml: a setting of pretrain.yaml).
        ``warnings``: a message per key that exists only as a top-level entry no ``@`` / ``%`` reference of the files
        run uses (an overlay such as quick.yaml sets the keys of every workflow: ``--val_interval`` given to
        pretrain.yaml with quick.yaml), as it changes nothing either.
        Both are empty when a config file does not exist (MONAI's runner reports that).
    """
    files = _files(config_file)
    if not files or not all(Path(f).is_file() for f in files):
        return OverrideReport([], [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = dict(ConfigParser.load_config_files(files))
    root = Path(files[0]).parent
    metas = _files(meta_file) if meta_file is not None else [str(root / "metadata.json")]
    metas = [m for m in metas if Path(m).is_file()]
    if metas:
        config[META_KEY] = ConfigParser.load_config_files(metas)
    settings = _tracking_settings(tracking)
    for k, v in _tracking_keys(settings).items() if settings else ():
        config.setdefault(k, v)
    used = _referenced(config) | _referenced(settings) | RUNNER_KEYS
    if settings:
        used |= {"output_dir", "save_execute_config"}  # read by MONAI's tracking patch
    ids: list[str] | None = None
    messages, unused = [], []
    run_names = {Path(f).resolve() for f in files}
    for raw in overrides:
        key = _normalize(raw)
        key = key[1:] if key.startswith("+") else key
        if has_id(config, key):
            top = key.split(SEP, 1)[0]
            if top not in used:
                defined = [Path(f).name for f in files if _file_has(_load(f), top)]
                unused.append(
                    f"--{raw}: {top} is set in {', '.join(defined) or 'the config'} but nothing in the files run "
                    "refers to it (@" + top + "): it would change nothing"
                )
            continue
        if ids is None:
            ids = list(config_ids({k: v for k, v in config.items() if k != META_KEY}))
        suggestions = _suggest(key, ids)
        elsewhere = _defined_elsewhere(key, root, run_names)
        where = elsewhere or f"no such setting in {', '.join(Path(f).name for f in files)}"
        if suggestions:
            where += f"; did you mean {', '.join('--' + s for s in suggestions)}?"
        messages.append(f"--{raw}: {where}")
    return OverrideReport(messages, unused)


def _load(path: str) -> dict:
    """One config file as written, ``+`` dropped from its keys (an overlay may hold ``a#b`` keys at its top)."""
    content = ConfigParser.load_config_file(str(path))
    if not isinstance(content, Mapping):
        return {}
    return {_normalize(k[1:] if str(k).startswith("+") else k): v for k, v in content.items()}


def _file_has(content: Mapping, key: str) -> bool:
    """Whether one file's content (:func:`_load`) sets ``key`` or an entry above or below it."""
    if has_id(content, key):
        return True
    for k, v in content.items():
        if SEP not in k:
            continue
        if key == k or (key.startswith(k + SEP) and has_id(v, key[len(k) + 1 :])) or k.startswith(key + SEP):
            return True
    return False


def _defined_elsewhere(key: str, root: Path, run_names: set[Path]) -> str:
    """Where, among the other config files beside the ones run, ``key`` is a setting ("" if nowhere)."""
    if not root.is_dir():
        return ""
    found, tracking_files = [], []
    for path in sorted(root.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json") or path.name == "metadata.json":
            continue
        if path.resolve() in run_names:
            continue
        try:
            content = _load(str(path))
        except Exception:  # noqa: BLE001 - an unreadable neighbour is no reason to stop the check
            continue
        if _is_tracking_file(content):
            if has_id(_tracking_keys(content), key):
                tracking_files.append(path.name)
        elif _file_has(content, key):
            found.append(path.name)
    if found:
        return f"is a setting of {', '.join(found)}, not of the files run here"
    if tracking_files:
        return f"is a setting of {', '.join(tracking_files)}: give --tracking configs/{tracking_files[0]}"
    return ""


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Stop a ``python -m monai.bundle run`` whose command line sets a key that is no setting of its config files.

    The first step of every workflow's ``initialize`` (``$shared_networks.check_overrides()``), so it runs before
    any data is read. A no-op in any other process (``ConfigWorkflow`` or ``monai.bundle.run`` called from Python,
    MONAI Label, tests). Overrides in ``--args_file`` are checked too. With ``SHARED_NETWORKS_ALLOW_NEW_SETTINGS=1``
    in the environment the messages are a warning and the run goes on (MONAI adds the new keys, as it would
    without this check).

    Args:
        argv: the process's arguments, ``sys.argv`` by default.

    Raises:
        SystemExit: (exit status 1) with one line per unknown key and the closest existing keys.
    """
    kwargs = cli_overrides(argv)
    if kwargs is None:
        return
    args_file = kwargs.get("args_file")
    if args_file:
        from_file = ConfigParser.load_config_file(str(args_file))
        kwargs = {**dict(from_file), **kwargs}
    overrides = {k: v for k, v in kwargs.items() if k not in RUN_ARGUMENTS}
    if not overrides:
        return
    report = find_unknown_overrides(
        overrides, kwargs.get("config_file"), meta_file=kwargs.get("meta_file"), tracking=kwargs.get("tracking")
    )
    if report.warnings:
        print(
            "\n".join(
                ["WARNING: monai.bundle run: overrides that change nothing:"] + [f"  {m}" for m in report.warnings]
            ),
            file=sys.stderr,
        )
    if not report.errors:
        return
    text = "\n".join(
        ["monai.bundle run: the command line sets keys that are no setting of the config files run:"]
        + [f"  {m}" for m in report.errors]
    )
    if os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes"):
        print(f"WARNING: {text}\n  ({ALLOW_ENV} is set: they are added as new keys)", file=sys.stderr)
        return
    raise SystemExit(
        f"{text}\nNothing was run. Check the spelling against the config files (or set {ALLOW_ENV}=1 to add new "
        "keys on purpose)."
    )
