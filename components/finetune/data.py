"""The input pipeline: grain over the convert step's ArrayRecord shards.

  records -> seeded global shuffle (reshuffled every epoch) -> endless repeat -> this host's slice
  -> parallel decode (threads) -> batch of batch_size / hosts examples

Each example becomes big_vision's training layout: `image` [H, W, 3] f32 in [-1, 1]
(`paligemma.preprocess_image`, which evaluation uses too) and `text`/`mask_ar`/`mask_loss` [text_len + 1]
int32 from `Tokenizer.encode_train`. The order depends only on the seed, and the iterator's position
(`get_state()`) is saved in every checkpoint, so a resumed run sees exactly the batches it would have.
"""
from __future__ import annotations

import json
import logging
import math
import os

import grain
import numpy as np

from components.common import datasets, records
from components.paligemma import preprocess_image

_TEXT_KEYS = ("text", "mask_ar", "mask_loss")
_MEASURE_LEN = 8192  # as convert's report: long enough that nothing is cut while the tokens are counted
TEXT_LEN_MULTIPLE = 8  # text_len 0 ("from the data") rounds up to a multiple of this
log = logging.getLogger("components.finetune")


class Preprocess(grain.transforms.Map):
  """One record (msgpack bytes) -> one training example."""

  def __init__(self, tokenizer, image_size: int, text_len: int):
    self._tokenizer, self._size, self._text_len = tokenizer, image_size, text_len

  def map(self, raw: bytes) -> dict:
    ex = records.decode_record(raw)
    try:
      image = preprocess_image(ex["image"], self._size)
    except Exception as e:  # a broken image must name the example, not just "cannot identify"
      raise ValueError(f"record {ex.get('id')!r} ({ex.get('image_path')}): cannot decode image: {e}; "
                       "re-run components.convert on the dataset") from e
    tokens = self._tokenizer.encode_train(ex["prefix"], ex["suffix"], self._text_len)
    return {"image": image, **{k: np.asarray(tokens[k], np.int32) for k in _TEXT_KEYS}}


def pin_dataset(data_dir: str) -> datasets.DatasetVersion:
  """The dataset directory's current version, held for the run; every host reads the one process 0 found."""
  import jax
  from jax.experimental import multihost_utils

  pinned = datasets.pin(data_dir)
  if jax.process_count() == 1:
    return pinned
  name = (pinned.version or "").encode()
  chief = multihost_utils.broadcast_one_to_all(np.frombuffer(name.ljust(128, b"\0"), np.uint8))
  chief_name = bytes(np.asarray(chief, np.uint8)).rstrip(b"\0").decode()
  if chief_name == (pinned.version or ""):
    return pinned
  pinned.close()
  return datasets.pin(data_dir, chief_name or None)


def num_examples(data_dir: str, split: str) -> int:
  return len(grain.sources.ArrayRecordDataSource(records.list_shards(data_dir, split)))


def token_lengths(data_dir: str, split: str, tokenizer) -> np.ndarray | None:
  """Tokens of each example's full training sequence (bos, prefix, separator, suffix, eos), counted as
  convert's report.json `token_lengths` counts them, from the split's JSONL; the trainer feeds
  `text_len + 1` of them. None when the split has no JSONL (a dataset not written by convert)."""
  path = os.path.join(data_dir, f"{split}.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return np.array([int(np.count_nonzero(tokenizer.encode_train(r["prefix"], r["suffix"], _MEASURE_LEN)["text"]))
                   for r in rows], np.int64)


def fit_text_len(text_len: int, lengths: np.ndarray | None) -> int:
  """The text_len to train with: `text_len` 0 sizes it from the data (the longest example, rounded up to a
  multiple of TEXT_LEN_MULTIPLE), said in one line; a set `text_len` stays, with a WARNING naming how many
  examples it truncates."""
  if lengths is None or not len(lengths):
    if text_len == 0:
      raise ValueError("text_len 0 sizes the text from the training examples, but the training split has no "
                       "JSONL rows to measure; set config.text_len")
    return text_len
  longest, p99 = int(lengths.max()), int(math.ceil(np.percentile(lengths, 99)))
  fits = -(-(longest - 1) // TEXT_LEN_MULTIPLE) * TEXT_LEN_MULTIPLE  # the trainer sees text_len + 1 tokens
  if text_len == 0:
    log.info("text_len %d from the data: the longest of %d training examples is %d tokens (p99 %d)", fits,
             len(lengths), longest, p99)
    return fits
  truncated = int(np.sum(lengths > text_len + 1))
  if truncated:
    log.warning("text_len %d truncates %d of %d training examples (the longest is %d tokens, p99 %d): their "
                "ends are not learned; set text_len %d to keep them whole, or 0 to size it from the data",
                text_len, truncated, len(lengths), longest, p99, fits)
  return text_len


def local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} does not split over {process_count} hosts")
  return batch_size // process_count


class TooFewExamples(ValueError):
  """A training split smaller than one batch; callers name the batch size's source (task.too_few_examples)."""

  def __init__(self, data_dir: str, split: str, count: int, batch_size: int):
    super().__init__(f"split {split!r} of {data_dir} has {count} examples, fewer than one batch ({batch_size}); "
                     "lower the batch size")
    self.data_dir, self.split, self.count, self.batch_size = data_dir, split, count, batch_size


def train_iterator(data_dir: str, split: str, preprocess: Preprocess, *, batch_size: int, seed: int,
                   threads: int = 8, process_index: int = 0, process_count: int = 1):
  """Endless iterator of this host's share of each global batch; has get_state()/set_state()."""
  source = grain.sources.ArrayRecordDataSource(records.list_shards(data_dir, split))
  if len(source) < batch_size:
    raise TooFewExamples(data_dir, split, len(source), batch_size)
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  ds = ds[process_index::process_count].map(preprocess)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * batch_size))
  return iter(ds.batch(local_batch_size(batch_size, process_count), drop_remainder=True))


def eval_batches(data_dir: str, split: str, preprocess: Preprocess, *, batch_size: int, max_batches: int = 0,
                 threads: int = 8, process_index: int = 0, process_count: int = 1):
  """This host's share of the split in fixed order, each batch padded to full size.

  Padding rows have `mask_loss` 0 and `valid` 0, so they add nothing to the loss sum or the count.
  """
  source = grain.sources.ArrayRecordDataSource(records.list_shards(data_dir, split))
  local = local_batch_size(batch_size, process_count)
  count = math.ceil(len(source) / batch_size)
  if max_batches:
    count = min(count, max_batches)
  ds = grain.MapDataset.source(source)[process_index::process_count].map(preprocess)
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * local)))
  for _ in range(count):
    rows = [ex for _, ex in zip(range(local), it)]
    yield _pad_batch(rows, local, template=rows[0] if rows else None, preprocess=preprocess)


def _pad_batch(rows: list[dict], size: int, template, preprocess) -> dict:
  if template is None:  # this host ran out before the others: an all-padding batch keeps them in step
    template = {"image": np.zeros((preprocess._size, preprocess._size, 3), np.float32),
                **{k: np.zeros(preprocess._text_len + 1, np.int32) for k in _TEXT_KEYS}}
  pad = {k: np.zeros_like(v) for k, v in template.items()}
  batch = {k: np.stack([r[k] for r in rows] + [pad[k]] * (size - len(rows))) for k in template}
  batch["valid"] = np.array([1] * len(rows) + [0] * (size - len(rows)), np.int32)
  return batch
