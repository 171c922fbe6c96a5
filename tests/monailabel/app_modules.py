"""The app's modules (monailabel_app/) in the project's environment, for the tests that need Starlette but not
MONAI Label: each loaded under its own name, as MONAI Label's app folder imports its siblings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

APP = Path(__file__).resolve().parents[2] / "monailabel_app"


def load_app_modules(*names: str) -> dict[str, ModuleType]:
    """``names`` (in import order) loaded from monailabel_app/ into ``sys.modules``; the modules by name."""
    sys.path.insert(0, str(APP))
    try:
        for name in names:
            spec = importlib.util.spec_from_file_location(name, APP / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(APP))
    return {name: sys.modules[name] for name in names}
