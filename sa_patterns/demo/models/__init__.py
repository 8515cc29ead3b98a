"""The demo app's models: one module per pattern, all on one ``Base``.

Importing this package imports every module in it, so ``Base.metadata`` is complete for
autogenerate (``sa_patterns.metadata = sa_patterns.demo.models:Base``).
"""

import importlib
import pkgutil

from .base import Base

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Base"]
