"""The download step: PaliGemma weights and tokenizer from Kaggle, GCS, the Hugging Face hub or a path
into a model directory (docs/ARCHITECTURE.md). CLI: `python -m components.download --help`."""
from components.download.core import Plan, download_model, plan
from components.download.errors import ChecksumError, DownloadError
from components.download.sources import DEFAULT_TOKENIZER, DEFAULT_VQVAE, Kind, Source, parse, release_source

__all__ = ["ChecksumError", "DEFAULT_TOKENIZER", "DEFAULT_VQVAE", "DownloadError", "Kind", "Plan", "Source", "download_model", "parse",
           "plan", "release_source"]
