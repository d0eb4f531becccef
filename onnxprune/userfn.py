"""A function from a Python file the user names (``--calib file.py:fn``, ``--metric-fn file.py:fn``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator

from .errors import InputError


@contextlib.contextmanager
def user_function(path: str, func: str, what: str) -> Iterator[Callable]:
    """Import ``path`` — THIS RUNS ITS CODE — with its folder first on ``sys.path`` (so it can import files
    beside it) and yield its function ``func``; the module and the path entry are gone again afterwards.
    A file that cannot be imported, raises (or exits) while imported, or has no such function is an
    InputError naming ``what`` ("calibration script") and the file."""
    name = f"_onnxprune_user_{abs(hash(os.path.abspath(path)))}"
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    try:
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise InputError(f"cannot import {what} {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except InputError:
            raise
        except (Exception, SystemExit) as exc:
            raise InputError(f"{what} {path} raised {type(exc).__name__}: {exc}") from None
        fn = getattr(module, func, None)
        if not callable(fn):
            raise InputError(f"{what} {path} has no function '{func}'")
        yield fn
    finally:
        sys.modules.pop(name, None)
        if folder in sys.path:
            sys.path.remove(folder)
