"""Every relative link of the docs leads somewhere: the file exists, and a ``#anchor`` names a heading of it.

Links are read from the Markdown of the README, the guide (``docs/``), the bundles' docs and the benchmarks' README,
outside fenced blocks and code spans; web addresses are not fetched. Anchors follow GitHub's rule: the heading in
lower case, punctuation dropped, spaces as hyphens, a repeated heading numbered ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [
        REPO / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "bundles").glob("*/docs/*.md"),
        *(REPO / "benchmarks").glob("*.md"),
    ]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text without fenced blocks and code spans."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_keep_code(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def prose_keep_code(text: str) -> str:
    """The text without fenced blocks (a ``#`` line inside a bash block is a comment, not a heading)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def local_links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(prose(doc.read_text(encoding="utf-8"))) if not re.match(r"[a-z]+:", t)]


def broken_links(doc: Path) -> list[str]:
    """The doc's relative links whose file does not exist, or whose anchor names no heading of that file."""
    broken = []
    for target in local_links(doc):
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading for '#{anchor}'")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    assert broken_links(doc) == [], doc.relative_to(REPO)


def test_the_guide_and_the_bundles_are_linked_from_the_readme():
    """One click from the README to every page of the guide and every bundle's docs."""
    linked = {(REPO / t.partition("#")[0]).resolve() for t in local_links(REPO / "README.md")}
    pages = [*(REPO / "docs").glob("*.md"), *(REPO / "bundles").glob("*/docs/README.md")]
    assert sorted(str(p.relative_to(REPO)) for p in pages if p.resolve() not in linked) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text(
        "# Title\n\n## Two words, `code`\n\n```bash\n# a comment, not a heading: [c](gone.md)\n```\n\n"
        "[x](b.md) [y](#two-words-code) [z](a.md#nope) `[w](in-code.md)` [web](https://example.org/x.md)\n"
    )
    assert anchors(doc) == {"title", "two-words-code"}
    assert broken_links(doc) == ["b.md: no such file", "a.md#nope: no heading for '#nope'"]
