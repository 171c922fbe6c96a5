"""Checks, before MONAI Label starts, that nothing the server writes on a client's behalf is ever importable.

The datastore (``--studies``: images and labels uploaded by clients) and the server's temporary folder must lie apart
from every folder Python imports from in the server and its training processes: the app folder (MONAI Label puts it on
``PYTHONPATH`` and its ``bin/`` on ``PATH``), the bundles (MONAI Label puts a bundle's folder on its training process's
``PYTHONPATH``), each ``PYTHONPATH`` entry, the interpreter's own ``sys.path`` (site-packages, where a ``.pth`` file
runs code) and the working directory (``python -m`` imports from it). Neither may be inside the other.

    python layout.py --studies DIR --app DIR --bundles DIR [--tmpdir DIR]

exits 2 naming the two folders when they overlap (``scripts/serve_monailabel.sh`` runs it with the server's python).
"""

from __future__ import annotations

import argparse
import os
import sys


def _inside(a: str, b: str) -> bool:
    return os.path.commonpath([a, b]) == b


def overlaps(writable: dict[str, str], code: dict[str, str]) -> list[str]:
    """Problems: each pair of a writable folder and a code folder where one holds the other (real paths)."""
    problems = []
    for wname, w in writable.items():
        w = os.path.realpath(w)
        for cname, c in code.items():
            c = os.path.realpath(c)
            if _inside(w, c) or _inside(c, w):
                problems.append(
                    f"{wname} '{w}' and {cname} '{c}' overlap: a file a client uploads could be imported as code. "
                    "Keep the studies folder and the server's temporary folder apart from the app, the bundles and "
                    "every Python path."
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--bundles", required=True)
    parser.add_argument("--tmpdir", default="")
    args = parser.parse_args(argv)
    writable = {"the studies folder": args.studies}
    if args.tmpdir:
        writable["the temporary folder"] = args.tmpdir
    entries = [("the app folder", args.app), ("the bundles folder", args.bundles)]
    entries += [("the working directory", os.getcwd())]
    entries += [("a PYTHONPATH entry", p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries += [("a Python path entry", p) for p in sys.path if p and os.path.isdir(p)]
    problems = [p for name, folder in entries for p in overlaps(writable, {name: folder})]
    for p in dict.fromkeys(problems):
        print(f"serve_monailabel.sh: {p}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
