"""Demo sections: each module has ``TITLE`` and ``run(ctx)``; they run in module-name order."""

import importlib
import pkgutil
from types import ModuleType


def sections() -> list[ModuleType]:
    found = sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
    return [importlib.import_module(f"{__name__}.{info.name}") for info in found]
