"""Two import fixes that MONAI Label 0.8.5 needs in its own environment (``.venv-monailabel``), loaded by a ``.pth``.

``scripts/setup_monailabel.sh`` copies this file into that environment's site-packages as ``_mae_monailabel_compat.py``
with a ``.pth`` file that imports it at interpreter start, so the server and the training processes it spawns all get
both fixes. Nothing is imported here until the module concerned is: interpreter start stays fast.

1. ``pydicom._storage_sopclass_uids``: MONAI Label imports ``pydicom_seg``, which imports the SOP class UIDs from this
   module; pydicom 3 no longer has it (the UIDs live in ``pydicom.uid``). It is answered with a module holding
   ``pydicom.uid``'s names, only when pydicom itself has no such module (this finder is consulted last).
2. ``torchvision``: PyPI's torchvision 0.28.0 (the release for torch 2.13.0) is built against the CUDA torch, so its
   compiled ops do not load beside the CPU torch 2.13.0; torchvision then still registers fake kernels for
   ``torchvision::nms`` and ``torchvision::qnms`` without checking, and its import fails ("operator torchvision::nms
   does not exist"). MONAI Label imports ``torchvision.utils`` (pure Python: ``make_grid``, ``save_image``). Before
   torchvision is first imported, and only if its ``_C`` library cannot be loaded, the schemas of these two operators
   are defined (no kernel: calling ``torchvision.ops.nms`` still raises a clear "could not run" error).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path

PYDICOM_ALIAS = "pydicom._storage_sopclass_uids"
PYDICOM_TARGET = "pydicom.uid"
TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_libraries: list = []  # keeps the torch.library.Library alive (its definitions go with it)


class _PydicomAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds :data:`PYDICOM_ALIAS` (appended to ``sys.meta_path``: only when no regular finder does)."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(fullname, self) if fullname == PYDICOM_ALIAS else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        target = importlib.import_module(PYDICOM_TARGET)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})


class _TorchvisionOps(importlib.abc.MetaPathFinder):
    """On the first import of ``torchvision`` (first in ``sys.meta_path``), defines the missing operator schemas."""

    done = False

    def find_spec(self, fullname: str, path=None, target=None) -> None:
        if fullname != "torchvision" or self.done:
            return None
        type(self).done = True
        spec = importlib.machinery.PathFinder.find_spec(fullname)
        if spec is None or spec.origin is None:
            return None
        import torch

        libs = sorted(Path(spec.origin).parent.glob("_C*.so"))
        try:
            if not libs:
                raise OSError("no _C library")
            torch.ops.load_library(str(libs[0]))
        except (OSError, RuntimeError):
            lib = torch.library.Library("torchvision", "DEF")
            for schema in TORCHVISION_SCHEMAS:
                lib.define(schema)
            _libraries.append(lib)
        return None  # the regular finders import torchvision itself


if not any(isinstance(f, _PydicomAlias) for f in sys.meta_path):
    sys.meta_path.append(_PydicomAlias())
if not any(isinstance(f, _TorchvisionOps) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionOps())
