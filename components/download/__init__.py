"""The download step: PaliGemma weights and tokenizer from Kaggle, GCS, the Hugging Face hub or a path
into a model directory (docs/ARCHITECTURE.md). CLI: `python -m components.download --help`."""
from components.download.errors import ChecksumError, DownloadError
from components.download.sources import DEFAULT_TOKENIZER, DEFAULT_VQVAE, Kind, Source, parse, release_source

__all__ = ["ChecksumError", "DEFAULT_TOKENIZER", "DEFAULT_VQVAE", "DownloadError", "Kind", "Plan", "Source", "download_model", "parse",
           "plan", "release_source"]


def __getattr__(name: str):
  """The core (requests, the cloud SDKs) loads on first use, so `python -m components.download --help` stays
  fast."""
  if name not in ("Plan", "download_model", "plan"):
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  from components.download import core

  return getattr(core, name)
