"""PaliGemma's sentencepiece tokenizer and big_vision's text layout for training and prompting.

Layout (PALIGEMMA.md §4): pad 0, eos 1, bos 2; `<locNNNN>` and `<segNNN>` pieces with contiguous ids
(256000+n and 257024+n in the released tokenizer). The encoders mirror big_vision's pp ops
`tok|masked_concat|tolen` as wired by `configs/proj/paligemma/transfers/common.py`:

  train:  [bos] + sp(prefix) | sp("\n") | sp(suffix) + [eos]   mask_ar 0|0|1, mask_loss 0|0|1
          cut or padded to text_len+1 (text 0, mask_ar 1, mask_loss 0)
  prompt: [bos] + sp(prefix) | sp("\n")                        mask_ar 0, mask_input 1
          cut or padded to text_len (text 0, mask_ar 0, mask_input 0)

The separator is encoded on its own, never merged into the prefix. Too-long examples are cut at the end
like big_vision's `tolen` (no sticky eos), so a cut training example loses its eos; the encoders report it.
"""
from __future__ import annotations

import re
from typing import Sequence

import fsspec
import numpy as np

from components.paligemma._small_tokenizer import train_small_tokenizer  # noqa: F401 (re-export)

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
SEPARATOR = "\n"
NUM_LOC, NUM_SEG = 1024, 128

_LOC_RE = re.compile(r"<loc(\d{4})>")


def loc_piece(n: int) -> str:
  """The text of location token n (0..1023), e.g. `<loc0042>`."""
  if not 0 <= n < NUM_LOC:
    raise ValueError(f"location bin {n} is outside 0..{NUM_LOC - 1}")
  return f"<loc{n:04d}>"


def seg_piece(n: int) -> str:
  """The text of segmentation token n (0..127), e.g. `<seg007>`."""
  if not 0 <= n < NUM_SEG:
    raise ValueError(f"segmentation code {n} is outside 0..{NUM_SEG - 1}")
  return f"<seg{n:03d}>"


def parse_loc_pieces(text: str) -> list[int]:
  """Location bins of every `<locNNNN>` in text, in order (`"<loc0001><loc0100> cat"` -> [1, 100])."""
  return [int(m) for m in _LOC_RE.findall(text)]


def _read_bytes(path: str) -> bytes:
  try:
    with fsspec.open(str(path), "rb") as f:  # local paths and gs:// (gcsfs) alike
      return f.read()
  except FileNotFoundError as e:
    raise FileNotFoundError(f"tokenizer model {path} not found; pass the path of a sentencepiece "
                            "`.model` file (e.g. the model directory's tokenizer.model)") from e


class Tokenizer:
  """A sentencepiece model with PaliGemma's special ids, loc/seg pieces and big_vision's encoders."""

  pad_id, eos_id, bos_id = PAD_ID, EOS_ID, BOS_ID

  def __init__(self, path: str):
    self.path = str(path)
    import sentencepiece as spm  # here: building and running the model needs no tokenizer

    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(_read_bytes(path))
    except RuntimeError as e:
      raise ValueError(f"{path} is not a sentencepiece model ({e}); re-download the tokenizer") from e
    got = (self._sp.pad_id(), self._sp.eos_id(), self._sp.bos_id())
    if got != (PAD_ID, EOS_ID, BOS_ID):
      raise ValueError(f"tokenizer {path} has pad/eos/bos ids {got}, PaliGemma needs (0, 1, 2); "
                       "use PaliGemma's tokenizer or one made by train_small_tokenizer")
    self._loc0 = self._contiguous_ids(loc_piece, NUM_LOC)
    self._seg0 = self._contiguous_ids(seg_piece, NUM_SEG)
    self._sep = self.encode(SEPARATOR)  # a constant, encoded once (big_vision memoizes it too)

  def _contiguous_ids(self, piece_fn, count: int) -> int | None:
    """Id of piece 0 when all `count` pieces exist with consecutive ids; None when the set is absent."""
    first = self._sp.PieceToId(piece_fn(0))
    if first == self._sp.unk_id():
      return None
    ids = [self._sp.PieceToId(piece_fn(n)) for n in range(count)]
    if ids != list(range(first, first + count)):
      raise ValueError(f"tokenizer {self.path}: pieces {piece_fn(0)}..{piece_fn(count - 1)} do not have "
                       "consecutive ids; PaliGemma needs them contiguous")
    return first

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()

  def loc_token_id(self, n: int) -> int:
    """Id of `<locNNNN>` (256000+n in the released tokenizer)."""
    if self._loc0 is None:
      raise ValueError(f"tokenizer {self.path} has no <locNNNN> pieces")
    loc_piece(n)  # range check
    return self._loc0 + n

  def seg_token_id(self, n: int) -> int:
    """Id of `<segNNN>` (257024+n in the released tokenizer)."""
    if self._seg0 is None:
      raise ValueError(f"tokenizer {self.path} has no <segNNN> pieces")
    seg_piece(n)
    return self._seg0 + n

  def loc_bin(self, token_id: int) -> int | None:
    """Inverse of `loc_token_id`: the bin of a location token id, None for any other id."""
    if self._loc0 is not None and self._loc0 <= token_id < self._loc0 + NUM_LOC:
      return int(token_id) - self._loc0
    return None

  def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
    """sentencepiece ids of text, with bos/eos only when asked (big_vision's `to_int`)."""
    return [self.bos_id] * bos + self._sp.EncodeAsIds(text) + [self.eos_id] * eos

  def encode_train(self, prefix: str, suffix: str, text_len: int) -> dict:
    """One training example: int32 `text/mask_ar/mask_loss` [text_len+1] and `truncated`."""
    parts = (self.encode(prefix, bos=True), self._sep, self.encode(suffix, eos=True))
    text, mask_ar, mask_loss = _masked_concat(parts, mask_ar=(0, 0, 1), mask_loss=(0, 0, 1))
    length = text_len + 1  # the trainer feeds text[:-1] and predicts text[1:]
    return {"text": _tolen(text, length, 0), "mask_ar": _tolen(mask_ar, length, 1),
            "mask_loss": _tolen(mask_loss, length, 0), "truncated": len(text) > length}

  def encode_prompt(self, prefix: str, text_len: int) -> dict:
    """One decoding prompt: int32 `text/mask_ar/mask_input` [text_len] and `truncated`.

    big_vision's eval pp pads mask_ar with 1; we pad with 0 (all of mask_ar is 0). Both are the same to
    the model: decoding drops padding by `mask_input`, so padded mask_ar values are never read.
    """
    parts = (self.encode(prefix, bos=True), self._sep)
    text, mask_ar, mask_input = _masked_concat(parts, mask_ar=(0, 0), mask_input=(1, 1))
    return {"text": _tolen(text, text_len, 0), "mask_ar": _tolen(mask_ar, text_len, 0),
            "mask_input": _tolen(mask_input, text_len, 0), "truncated": len(text) > text_len}

  def encode_train_batch(self, prefixes: Sequence[str], suffixes: Sequence[str], text_len: int) -> dict:
    """`encode_train` of each pair stacked: arrays [B, text_len+1], `truncated` bool [B]."""
    if len(prefixes) != len(suffixes):
      raise ValueError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
    return _stack([self.encode_train(p, s, text_len) for p, s in zip(prefixes, suffixes)])

  def encode_prompt_batch(self, prefixes: Sequence[str], text_len: int) -> dict:
    """`encode_prompt` of each prefix stacked: arrays [B, text_len], `truncated` bool [B]."""
    return _stack([self.encode_prompt(p, text_len) for p in prefixes])

  def decode(self, ids) -> str:
    """Text of ids up to the first eos; pad/bos vanish, `<locNNNN>`/`<segNNN>` stay as written."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._sp.DecodeIds(ids)

  def decode_batch(self, ids) -> list[str]:
    """`decode` of each row of ids [B, T]."""
    return [self.decode(row) for row in np.asarray(ids)]

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.IdToPiece(int(token_id))


def _masked_concat(parts, **masks) -> tuple[np.ndarray, ...]:
  """big_vision's `masked_concat`: concatenate parts, and for each mask fill part i with value i."""
  text = np.concatenate([np.asarray(p, np.int32) for p in parts])
  mask_arrays = [np.concatenate([np.full(len(p), v, np.int32) for p, v in zip(parts, vals)])
                 for vals in masks.values()]
  return (text, *mask_arrays)


def _tolen(x: np.ndarray, length: int, pad_value: int) -> np.ndarray:
  """big_vision's `tolen` without sticky end: cut to `length`, or right-pad with `pad_value`."""
  if len(x) >= length:
    return x[:length].astype(np.int32)
  return np.pad(x, (0, length - len(x)), constant_values=pad_value).astype(np.int32)


def _stack(examples: list[dict]) -> dict:
  if not examples:
    raise ValueError("cannot encode an empty batch")
  return {k: np.stack([e[k] for e in examples]).astype(bool if k == "truncated" else np.int32)
          for k in examples[0]}
