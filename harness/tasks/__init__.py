"""Task units: the model wrapper (head, loss, prediction) of each downstream task, one module per task; its
config is configs/tasks/<task>.py. Importing this package registers every module in it."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
