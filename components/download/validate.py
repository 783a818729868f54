"""Cheap checks that a downloaded file is what it claims to be, before it enters a model directory.

They read headers only (an .npz's member names, a sentencepiece proto), so a 55 GB checkpoint costs
nothing extra; the mask codec (8 MB) is loaded and checked whole. A checkpoint that is no zip at all (an HTML error page saved as `x.npz`) is an error;
content that merely looks unusual (arrays outside img/ and llm/, a tokenizer sentencepiece cannot
read) is a warning, since test and custom checkpoints may legitimately differ.
"""
from __future__ import annotations

import logging
import os
import zipfile

import sentencepiece as spm

from components.download.errors import DownloadError

log = logging.getLogger(__name__)


def checkpoint(path: str) -> None:
  """A big_vision .npz: a zip of `.npy` members, expected under `img/` and `llm/` (optionally `params/`)."""
  try:
    with zipfile.ZipFile(path) as z:
      names = [n.removesuffix(".npy").removeprefix("params/") for n in z.namelist()]
  except zipfile.BadZipFile:
    raise DownloadError(f"{path} is not an .npz file (not a zip archive): the source served something else; "
                        "check the URI") from None
  towers = {n.split("/")[0] for n in names}
  if not {"img", "llm"} <= towers:
    log.warning("%s does not look like a PaliGemma checkpoint: its arrays are under %s, expected img/... and "
                "llm/... (big_vision layout)", path, sorted(towers))


def vqvae(path: str, source: str) -> None:
  """A mask codec in the released layout (`vae-oid.npz`): the model library's loader reads it and checks every
  name and shape (8 MB, cheap). Anything else is an error naming the source: a segmenter cannot use it."""
  from components.paligemma.checkpoint import CheckpointError  # the model library owns the codec's layout
  from components.paligemma.vqvae import load_vqvae

  try:
    load_vqvae(path)
  except CheckpointError as e:
    raise DownloadError(f"--vqvae {source} is not a mask codec: {str(e).replace(path, os.path.basename(path))}. "
                        "Give the VQ-VAE .npz in big_vision's released layout, e.g. "
                        "gs://big_vision/paligemma/vae-oid.npz") from None


def tokenizer(path: str) -> None:
  """A sentencepiece model that loads."""
  try:
    spm.SentencePieceProcessor(model_file=path)
  except (RuntimeError, OSError) as e:
    log.warning("%s is not a sentencepiece model sentencepiece can read (%s): check the --tokenizer URI", path, e)
