"""The report of a data-set check: every problem, by file, and the error that refuses a data set with errors."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_networks.utils.files import atomic_write_text

__all__ = [
    "ERROR",
    "WARNING",
    "DatasetError",
    "Problem",
    "ValidationReport",
    "check_items",
    "collect",
    "item_path",
    "outside_link",
    "require_valid",
]

logger = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"

PathLike = str | os.PathLike[str]


class DatasetError(ValueError):
    """A data set holds errors; the message is the full report."""


@dataclass(frozen=True)
class Problem:
    """One problem of one file.

    Attributes:
        severity: :data:`ERROR` (the data set cannot be used) or :data:`WARNING` (suspicious, usable).
        path: the file (or folder) concerned.
        message: what is wrong.
    """

    severity: str
    path: str
    message: str

    def __str__(self) -> str:
        where = "" if f"'{self.path}'" in self.message else f"{self.path}: "  # messages that quote their file
        return f"{self.severity.upper()}: {where}{self.message}"


@dataclass
class ValidationReport:
    """Every problem found in a data set, in file order.

    Attributes:
        dataset: name of the data set kind (``BTCV``, ``MSD Task01``, ...).
        root: the data set folder.
        problems: the problems found.
        num_files: number of files checked.
    """

    dataset: str
    root: str
    problems: list[Problem] = field(default_factory=list)
    num_files: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not self.errors

    def error(self, path: PathLike, message: str) -> None:
        self.problems.append(Problem(ERROR, str(path), message))

    def warning(self, path: PathLike, message: str) -> None:
        self.problems.append(Problem(WARNING, str(path), message))

    def summary(self) -> str:
        """One line: the data set, the number of files, errors and warnings."""
        return (
            f"{self.dataset} data set '{self.root}': {self.num_files} files checked, {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)."
        )

    def format(self, max_shown: int | None = 100) -> str:
        """The summary line, then one line per problem (errors first; at most ``max_shown`` of each kind)."""
        lines = [self.summary()]
        for kind in (self.errors, self.warnings):
            shown = kind if max_shown is None else kind[:max_shown]
            lines += [f"  {p}" for p in shown]
            if len(kind) > len(shown):
                lines.append(f"  ... and {len(kind) - len(shown)} more {kind[0].severity}(s)")
        return "\n".join(lines)

    def raise_for_errors(self, max_shown: int | None = 100) -> None:
        """Raise :class:`DatasetError` with the report when there is an error."""
        if self.errors:
            raise DatasetError(self.format(max_shown))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "num_files": self.num_files,
            "errors": [{"path": p.path, "message": p.message} for p in self.errors],
            "warnings": [{"path": p.path, "message": p.message} for p in self.warnings],
        }

    def write_json(self, path: PathLike) -> Path:
        """Write every problem as JSON (atomically)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=4) + "\n")


def require_valid(report: ValidationReport, max_shown: int | None = 100) -> None:
    """Log the report's summary and warnings; raise :class:`DatasetError` (the full report) when it has an error."""
    if report.ok:
        logger.info(report.summary())
        for problem in report.warnings[:max_shown]:
            logger.warning(str(problem))
    report.raise_for_errors(max_shown)


def item_path(item: Any) -> str:
    """The file(s) of a datalist item (or the item itself when it is a path), for a problem's ``path``."""
    if isinstance(item, Mapping):
        image = item.get("image", item)
        return ", ".join(map(str, image)) if isinstance(image, (list, tuple)) else str(image)
    return str(item)


def outside_link(path: PathLike, root: PathLike | None) -> Problem | None:
    """An error when ``path`` lies in the folder ``root`` but is (or passes through) a symbolic link leading out of
    it, so that the check does not silently read files elsewhere; ``None`` otherwise."""
    if root is None:
        return None
    root = Path(root)
    path = Path(os.path.abspath(path))
    if not path.is_relative_to(root):
        return None
    target = path.resolve()
    if target.is_relative_to(root):
        return None
    return Problem(ERROR, str(path), f"is a symbolic link to '{target}', outside the data set folder '{root}'")


def collect(report: ValidationReport, issues: Iterable[tuple[str, Exception]]) -> None:
    for path, err in issues:
        report.error(path, str(err))


def check_items(
    report: ValidationReport,
    items: Sequence[Any],
    check: Callable[[Any], tuple[list[Problem], int]],
    num_workers: int,
) -> None:
    """Run ``check`` on every item (in threads: decompression and decoding release the GIL), in item order."""
    workers = max(1, int(num_workers))

    def guarded(item: Any) -> tuple[list[Problem], int]:
        try:
            return check(item)
        except Exception as err:  # MemoryError too: one bad file never stops the check of the others
            return [Problem(ERROR, item_path(item), f"cannot be checked ({type(err).__name__}: {err})")], 1

    if workers == 1 or len(items) < 2:
        results = [guarded(item) for item in items]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(guarded, items))
    for problems, count in results:
        report.problems.extend(problems)
        report.num_files += count
