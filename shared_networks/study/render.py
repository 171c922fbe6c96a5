"""The study for people: ``study.md`` (Markdown tables), ``study.html`` (a ``<section>`` for an HTML report) and
``label_efficiency.png`` (each arm's metric and each paired difference against the label fraction, with CIs)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_networks.utils.files import atomic_write_text

__all__ = ["render_study", "study_html", "study_markdown", "write_png"]

Series = dict[str, list[tuple[float | None, Sequence[float | None]]]]
"""Per arm or difference: per fraction, its value and its CI."""


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _split_name(summary: Mapping[str, Any]) -> str:
    """What the study evaluated on: the test split, held-out training patients, or one fold or all folds of them."""
    folds = summary.get("tune_folds")
    if folds and "tune_fold" in summary:
        return f"Held-out training patients, fold {summary['tune_fold']} of {folds} (tuning, test split not read)"
    if folds:
        return f"Held-out training patients, pooled over {folds} folds (cross-validation, test split not read)"
    return "Held-out training patients (tuning, test split not read)" if summary.get("tune_fraction") else "Test split"


def study_markdown(summary: Mapping[str, Any]) -> str:
    """The study as Markdown: per fraction, each arm's mean ± sd over seeds and each difference with its CI."""
    m = summary["metric"]
    split = _split_name(summary)
    lines = [
        "## Study: MAE against scratch",
        "",
        f"{split}: {summary['n_test']} {'images' if summary['task'] == 'classification' else 'cases'}; "
        f"{m} (mean over classes); differences with the paired bootstrap {int(summary['confidence'] * 100)} % CI over "
        f"test cases ({summary['n_resamples']} resamples, seed {summary['bootstrap_seed']}).",
        "",
        *[line for n in summary["notes"] for line in (f"Note: {n}", "")],
        "![label efficiency](label_efficiency.png)",
        "",
        f"| fraction | training items (patients) | arm | {m} mean ± sd over seeds | seeds |",
        "|---|---|---|---|---|",
    ]
    for f, entry in summary["fractions"].items():
        for arm, values in entry["arms"].items():
            v = values[m]
            sd = "" if v["sd"] is None else f" ± {_fmt(v['sd'])}"
            lines.append(
                f"| {f} | {entry['n_train']} ({entry['n_train_groups']}) | {summary['arm_labels'][arm]} | "
                f"{_fmt(v['mean'])}{sd} | {len(values['seeds'])} |"
            )
    lines += ["", f"| fraction | difference | {m} difference | 95 % CI | verdict |", "|---|---|---|---|---|"]
    for f, entry in summary["fractions"].items():
        for name, comp in entry["comparisons"].items():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            lines.append(f"| {f} | {name} | {_fmt(c['difference'])} | [{_fmt(lo)}, {_fmt(hi)}] | {c['verdict']} |")
    efficiency = summary.get("label_efficiency") or {}
    if efficiency:
        lines += [
            "",
            "Label efficiency: the MAE arm with fewer labels against scratch with the most, on the same test cases.",
            "",
            f"| comparison | {m} difference | 95 % CI | verdict |",
            "|---|---|---|---|",
        ]
        for comp in efficiency.values():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            lines.append(
                f"| {comp['comparison']} | {_fmt(c['difference'])} | [{_fmt(lo)}, {_fmt(hi)}] | {c['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def _html_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The rows of the HTML tables: each arm per fraction; each difference per fraction, then the label efficiency."""
    e = html.escape
    m = summary["metric"]
    rows = []
    for f, entry in summary["fractions"].items():
        for arm, values in entry["arms"].items():
            v = values[m]
            sd = "" if v["sd"] is None else f" ± {_fmt(v['sd'])}"
            rows.append(
                f"<tr><td>{e(f)}</td><td>{entry['n_train']} ({entry['n_train_groups']})</td>"
                f"<td>{e(summary['arm_labels'][arm])}</td><td>{_fmt(v['mean'])}{sd}</td></tr>"
            )
    diffs = []
    for f, entry in summary["fractions"].items():
        for name, comp in entry["comparisons"].items():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            diffs.append(
                f"<tr><td>{e(f)}</td><td>{e(name)}</td><td>{_fmt(c['difference'])}</td>"
                f"<td>[{_fmt(lo)}, {_fmt(hi)}]</td><td>{e(c['verdict'])}</td></tr>"
            )
    for comp in (summary.get("label_efficiency") or {}).values():
        c = comp[m]["mean"]
        lo, hi = c["ci95"]
        diffs.append(
            f"<tr><td>–</td><td>{e(comp['comparison'])}</td><td>{_fmt(c['difference'])}</td>"
            f"<td>[{_fmt(lo)}, {_fmt(hi)}]</td><td>{e(c['verdict'])}</td></tr>"
        )
    return rows, diffs


def study_html(summary: Mapping[str, Any]) -> str:
    """The study as an HTML fragment (a ``<section>``), the PNG referred to by its name beside it."""
    e = html.escape
    m = summary["metric"]
    rows, diffs = _html_rows(summary)
    return (
        "\n".join(
            [
                '<section id="study">',
                "<h2>Study: MAE against scratch</h2>",
                f'<p class="note">{e(_split_name(summary))}: {summary["n_test"]} cases; {e(m)} = mean over classes; '
                "paired bootstrap "
                f"{int(summary['confidence'] * 100)} % CI over test cases ({summary['n_resamples']} resamples).</p>",
                *[f'<p class="note">Note: {e(n)}</p>' for n in summary["notes"]],
                '<img src="label_efficiency.png" alt="metric against label fraction per arm, with CI bars">',
                "<table><tr><th>fraction</th><th>training items (patients)</th><th>arm</th>"
                f"<th>{e(m)} mean ± sd</th></tr>",
                *rows,
                "</table>",
                f"<table><tr><th>fraction</th><th>difference</th><th>{e(m)}</th><th>95 % CI</th><th>verdict</th></tr>",
                *diffs,
                "</table>",
                "</section>",
            ]
        )
        + "\n"
    )


# the figure

_COLOURS = {"mae": "#d62728", "scratch": "#1f77b4", "probe_mae": "#ff7f0e", "probe_random": "#2ca02c"}


def _arm_series(summary: Mapping[str, Any], fractions: Sequence[str]) -> Series:
    """Each arm's seed-averaged value and bootstrap CI per fraction."""
    m = summary["metric"]
    out = {}
    for arm in summary["arm_labels"]:
        out[arm] = [
            (
                (summary["fractions"][f]["arms"][arm][m].get("seed_averaged") or {}).get("value"),
                (summary["fractions"][f]["arms"][arm][m].get("seed_averaged") or {}).get("ci95", [None, None]),
            )
            for f in fractions
        ]
    return out


def _difference_series(summary: Mapping[str, Any], fractions: Sequence[str]) -> Series:
    """Each paired difference and its CI per fraction."""
    m = summary["metric"]
    out: Series = {}
    for f in fractions:
        for name, comp in summary["fractions"][f]["comparisons"].items():
            c = comp[m]["mean"]
            out.setdefault(name, []).append((c["difference"], c["ci95"]))
    return out


def _panel(
    ax: Any, series: Series, fractions: Sequence[str], labels: Mapping[str, str], title: str, zero: bool
) -> None:
    """One panel: each series as points joined by lines with their 95 % CI as error bars (series side by side at each
    fraction), the zero line on a difference panel, and a legend."""
    for k, (name, points) in enumerate(series.items()):
        shift = (k - (len(series) - 1) / 2) * 0.06
        xs = [i + shift for i, (v, _) in enumerate(points) if v is not None]
        ys = [v for v, _ in points if v is not None]
        low = [v - ci[0] if ci[0] is not None else 0.0 for v, ci in points if v is not None]
        high = [ci[1] - v if ci[1] is not None else 0.0 for v, ci in points if v is not None]
        colour = _COLOURS.get(name.split(" - ")[0], "#505050")
        ax.errorbar(
            xs, ys, yerr=[low, high], color=colour, marker="o", ms=5, capsize=4, lw=1.6, label=labels.get(name, name)
        )
    if zero:
        ax.axhline(0.0, color="#999999", lw=1)
    ax.set_xticks(range(len(fractions)), [f"{float(f) * 100:g}%" for f in fractions])
    ax.set_xlim(-0.5, len(fractions) - 0.5)
    ax.set_xlabel("fraction of labelled training patients")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", color="#eeeeee")
    if series:
        ax.legend(fontsize=8, loc="best")


def write_png(summary: Mapping[str, Any], path: Path) -> Path:
    """``label_efficiency.png``: left, the metric of each arm (seed-averaged, with its bootstrap CI) against the label
    fraction, with scratch at the largest fraction as a dashed line; right, each paired difference with its CI and the
    zero line (matplotlib)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    m = summary["metric"]
    fractions = sorted(summary["fractions"], key=float)
    labels = summary["arm_labels"]
    fig = Figure(figsize=(10, 4.8), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2)
    _panel(
        left,
        _arm_series(summary, fractions),
        fractions,
        labels,
        f"{m} (mean over classes, seeds averaged; bootstrap 95% CI)",
        zero=False,
    )
    top = summary["fractions"][fractions[-1]]["arms"].get("scratch") if fractions else None
    value = ((top or {}).get(m, {}).get("seed_averaged") or {}).get("value")
    if value is not None and len(fractions) > 1:  # what MAE with fewer labels has to reach: scratch with the most
        left.axhline(
            value, color=_COLOURS["scratch"], lw=1, ls="--", label=f"scratch at {float(fractions[-1]) * 100:g}%"
        )
        left.legend(fontsize=8, loc="best")
    _panel(
        right,
        _difference_series(summary, fractions),
        fractions,
        labels,
        f"paired difference of {m} (95% CI)",
        zero=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})  # the same bytes for the same summary
    os.replace(tmp, path)
    return path


def render_study(summary: Mapping[str, Any], output_dir: Path) -> None:
    """Writes ``label_efficiency.png``, ``study.md`` and ``study.html`` of ``summary`` to ``output_dir``."""
    write_png(summary, output_dir / "label_efficiency.png")
    atomic_write_text(output_dir / "study.md", study_markdown(summary))
    atomic_write_text(output_dir / "study.html", study_html(summary))
