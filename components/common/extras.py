"""Optional dependencies: what only some users need comes with a pip extra (pyproject.toml), imported where used.

    transformers = require("transformers", extra="hf", needed_by="export --export-format hf")

A missing one raises MissingExtra, whose message is one line naming the extra to install.
"""
from __future__ import annotations

import importlib
import types

PACKAGE = "paligemma-pipelines"


class MissingExtra(ImportError):
  """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, *, extra: str, needed_by: str) -> types.ModuleType:
  """Imports `module`, or raises MissingExtra: "<needed_by> needs the '<extra>' extra: pip install '...'"."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise MissingExtra(f"{needed_by} needs the '{extra}' extra ({module} is not installed): "
                       f"pip install '{PACKAGE}[{extra}]'", name=module) from e
