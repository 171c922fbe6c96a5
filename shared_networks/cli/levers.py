"""The lever table of a recipe search: settings (arms of study folders) against a reference on the same held-out
images, with paired bootstrap 95 % CIs.

Command line::

    python -m shared_networks.cli.levers --spec levers.json --output_dir runs/levers [--n_resamples 2000]

``levers.json``: ``{"reference": {"label": "recipe", "study_dir": "cv/base", "arm": "mae"}, "settings": [{"label":
"MAE 300 epochs", "study_dir": "cv/mae300", "arm": "mae"}, ...]}`` (optional ``fraction``, ``seeds``; a relative
``study_dir`` is read from the spec's folder). See :mod:`shared_networks.study.levers`.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_networks.cli import run_fire
from shared_networks.study.levers import write_lever_table

__all__ = ["levers", "main"]


def levers(spec: str, output_dir: str, n_resamples: int = 2000, bootstrap_seed: int = 0) -> str:
    """Write levers.json and levers.md (setting, arm, mean AUC with its CI, difference from the reference with its
    paired bootstrap CI, verdict) to output_dir, and print the Markdown table.

    Args:
        spec: the JSON spec of the reference and the settings.
        output_dir: folder of levers.json and levers.md.
        n_resamples: bootstrap resamples.
        bootstrap_seed: seed of the resamples.

    Returns:
        The path of levers.md.
    """
    path = write_lever_table(spec, output_dir, int(n_resamples), int(bootstrap_seed))
    print(path.read_text(encoding="utf-8"))
    return str(path)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.levers --spec FILE --output_dir DIR [--n_resamples N]``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    run_fire(levers, "shared_networks.cli.levers", argv)


if __name__ == "__main__":
    main()
