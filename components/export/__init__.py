"""The export step: a fine-tuned PaliGemma as a big_vision `.npz` or a transformers checkpoint, local or gs://,
with a manifest, optionally registered in Vertex AI. CLI: `python -m components.export --help`."""
from components.export.formats import FORMATS
from components.export.processor import write_processor
from components.export.registry import upload_request

__all__ = ["DTYPES", "FORMATS", "ExportConfig", "export", "upload_request", "write_processor"]
_LAZY = {"DTYPES": "core", "ExportConfig": "core", "export": "core"}


def __getattr__(name: str):
  """The core (numpy, jax through the model library) loads on first use, so `python -m components.export
  --help` stays fast."""
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  import importlib

  return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
