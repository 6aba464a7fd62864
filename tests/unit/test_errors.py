"""One error root: every exception class the project defines derives from TributaryError,
so that the `tributary` command can show each as one line instead of a traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import models
import offline
import stream
import tributary
from models.errors import TributaryError


def project_exceptions() -> list[type]:
    found = []
    for package in (models, offline, stream, tributary):
        for module_info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            module = importlib.import_module(module_info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def test_every_exception_of_the_project_derives_from_the_root():
    exceptions = project_exceptions()
    assert len(exceptions) >= 10  # the walk found them
    strays = [f"{cls.__module__}.{cls.__qualname__}" for cls in exceptions if not issubclass(cls, TributaryError)]
    assert not strays, f"derive these from models.errors.TributaryError: {strays}"
