"""One module per compression pass; importing this package registers them all.

Every module here is imported (``pkgutil``): a new pass is a new module, nothing else to edit.
Modules whose name starts with ``_`` are helpers and are not imported here.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
