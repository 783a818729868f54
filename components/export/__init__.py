"""The export step: a fine-tuned PaliGemma as a big_vision `.npz` or a transformers checkpoint, local or gs://,
with a manifest, optionally registered in Vertex AI. CLI: `python -m components.export --help`."""
from components.export.core import DTYPES, FORMATS, ExportConfig, export
from components.export.processor import write_processor
from components.export.registry import upload_request

__all__ = ["DTYPES", "FORMATS", "ExportConfig", "export", "upload_request", "write_processor"]
