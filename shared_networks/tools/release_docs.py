"""Markdown of a release that reads offline: the relative links of the packed ``.md`` files rewritten for the release.

A link to a file of the release becomes its path in the release (anchor kept); a link to anything else (another
bundle, the repository's README, benchmarks, tools) becomes its plain text. Used by
:func:`shared_networks.tools.export.export_bundle`, which packs the repository's guide (``docs/*.md``) as
``docs/guide/``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["release_links", "rewrite_release_links"]

# Markdown links (!?[text](target "title")) and code spans, as tests/test_docs_links.py reads them
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # https:, mailto:, ...: not a relative link


def release_links(text: str, doc: Path, packed: Mapping[Path, str]) -> str:
    """``text``, the Markdown of ``doc``, with its relative links made to work inside a release.

    Outside fenced blocks and code spans, each link's target is resolved from ``doc`` (``#anchor`` kept): a file or
    folder of ``packed`` becomes its path in the release, relative to ``doc``'s; any other target becomes the link's
    plain text. Web links (``https:``, ``mailto:``, ...) and ``#anchor`` links are kept. So in
    ``bundles/b/docs/README.md``, ``[cpu](../../../docs/settings.md#cpu)`` -> ``[cpu](guide/settings.md#cpu)`` and
    ``[c](../../c/docs/README.md)`` -> ``c``.

    Args:
        text: the Markdown of ``doc``.
        doc: where the file lies in the repository; its links are resolved from there.
        packed: what the release holds, as place in the repository -> path in the release (POSIX, from the bundle
            root); ``doc`` among them. Places are compared as written, normalised but not resolved.
    """
    here = posixpath.dirname(packed[doc]) or "."

    def rewrite(m: re.Match[str]) -> str:  # a link found in the masked text, read from ``text``
        label, target = text[m.start(1) : m.end(1)], text[m.start(2) : m.end(2)]
        file, hash_sign, anchor = target.partition("#")
        if not file or _SCHEME.match(target):
            return text[m.start() : m.end()]
        dest = packed.get(Path(os.path.normpath(doc.parent / file)))
        if dest is None:
            return label
        title = text[m.start(3) : m.end(3)] if m.group(3) else ""
        return f"{text[m.start() : m.start(1)]}{label}]({posixpath.relpath(dest, here)}{hash_sign}{anchor}{title})"

    # the text with fenced blocks and code spans blanked out, at the same offsets (a link's text may span lines)
    masked, fenced = [], False
    for line in text.splitlines(keepends=True):
        fence = line.startswith("```")
        fenced ^= fence
        body = line.rstrip("\r\n")
        if fence or fenced:
            masked.append(" " * len(body) + line[len(body) :])
        else:
            masked.append(_CODE_SPAN.sub(lambda c: "x" * len(c.group()), line))
    pieces, end = [], 0
    for m in _LINK.finditer("".join(masked)):
        pieces += [text[end : m.start()], rewrite(m)]
        end = m.end()
    return "".join(pieces) + text[end:]


def rewrite_release_links(root: Path, home: Path, left_out: set[Path], origins: Mapping[str, Path]) -> None:
    """Rewrite the links of every ``.md`` file staged in ``root`` (:func:`release_links`).

    Args:
        root: the staged release (the bundle root).
        home: the bundle's place in the repository: where the staged files come from, but for ``origins``.
        left_out: staged files the zip does not hold.
        origins: release folder -> its place in the repository (``{"docs/guide": <repo>/docs, ...}``).
    """
    packed = {}
    for path in sorted(root.rglob("*")):
        if path in left_out:
            continue
        rel = path.relative_to(root).as_posix()
        folder = next((f for f in origins if rel == f or rel.startswith(f + "/")), None)
        packed[origins[folder] / rel[len(folder) + 1 :] if folder else home / rel] = rel
    for place, rel in packed.items():
        if rel.endswith(".md") and (root / rel).is_file():
            text = (root / rel).read_text(encoding="utf-8")
            (root / rel).write_text(release_links(text, place, packed), encoding="utf-8")
