"""The adapter methods, one module per method family; each registers its methods on import.

Every module of this package is imported here, so a new method is one new file: its layer, its
options and a :func:`~terratorch_hsi_peft.adapters.registry.register_method` call.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
