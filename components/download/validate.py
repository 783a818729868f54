"""Cheap checks that a downloaded file is what it claims to be, before it enters a model directory.

They read headers only (an .npz's member names, a sentencepiece proto), so a 55 GB checkpoint costs
nothing extra; catching an HTML error page saved as `x.npz` here beats a confusing failure in finetune.
"""
from __future__ import annotations

import zipfile

import sentencepiece as spm

from components.download.errors import DownloadError


def checkpoint(path: str) -> None:
  """A big_vision .npz: a zip of `.npy` members under `img/` and `llm/` (optionally below `params/`)."""
  try:
    with zipfile.ZipFile(path) as z:
      names = [n.removesuffix(".npy").removeprefix("params/") for n in z.namelist()]
  except zipfile.BadZipFile:
    raise DownloadError(f"{path} is not an .npz file (not a zip archive): the source served something else; "
                        "check the URI") from None
  towers = {n.split("/")[0] for n in names}
  if not {"img", "llm"} <= towers:
    raise DownloadError(f"{path} is not a PaliGemma checkpoint: its arrays are under {sorted(towers)}, expected "
                        "img/... and llm/... (big_vision layout)")


def tokenizer(path: str) -> None:
  """A sentencepiece model that loads."""
  try:
    sp = spm.SentencePieceProcessor(model_file=path)
  except (RuntimeError, OSError) as e:
    raise DownloadError(f"{path} is not a sentencepiece model ({e}): check the --tokenizer URI") from None
  if sp.vocab_size() < 3:
    raise DownloadError(f"{path} has only {sp.vocab_size()} pieces; PaliGemma's tokenizer has 257152")
