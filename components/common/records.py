"""The streaming form of a converted dataset: ArrayRecord shards of msgpack-encoded examples.

Written by `components.convert`, read by the trainer (through grain) and by anyone else who wants the
images as bytes. One record = one example:

  {"id": str, "image": bytes (encoded JPEG or PNG, 3-channel 8-bit RGB), "image_path": str (relative to
   the dataset root), "prefix": str, "suffix": str}

Shards live in `DIR/records/{split}-{index:05d}-of-{count:05d}.array_record`.
"""
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable

import msgpack

RECORDS_DIR = "records"
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.array_record$")
FIELDS = ("id", "image", "image_path", "prefix", "suffix")


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def encode_record(example: dict) -> bytes:
  missing = [k for k in FIELDS if k not in example]
  if missing:
    raise ValueError(f"record is missing fields {missing}; a record needs {FIELDS}")
  return msgpack.packb({k: example[k] for k in FIELDS}, use_bin_type=True)


def decode_record(data: bytes) -> dict:
  return msgpack.unpackb(data, raw=False)


def list_shards(data_dir: str, split: str) -> list[str]:
  """Paths of a split's shards, in order. Works for local paths and `gs://` (through gcsfs)."""
  directory = os.path.join(data_dir, RECORDS_DIR)
  if data_dir.startswith("gs://"):
    import gcsfs
    names = [p.rsplit("/", 1)[-1] for p in gcsfs.GCSFileSystem().ls(directory)]
  else:
    names = os.listdir(directory) if os.path.isdir(directory) else []
  shards = sorted(n for n in names if (m := _SHARD_RE.match(n)) and m["split"] == split)
  if not shards:
    raise FileNotFoundError(f"no record shards for split {split!r} in {directory}; run components.convert first")
  return [os.path.join(directory, n) for n in shards]


def write_shards(data_dir: str, split: str, examples: Iterable[dict], num_examples: int,
                 examples_per_shard: int = 1000) -> list[str]:
  """Writes a split's `num_examples` records as `ceil(n / examples_per_shard)` shards (one, empty, when n = 0).

  `data_dir` is a local folder (the converter's staging folder); `examples` may be lazy, so a split never
  has to fit in memory. Returns the shard paths.
  """
  from array_record.python.array_record_module import ArrayRecordWriter

  count = max(1, -(-num_examples // examples_per_shard))
  directory = os.path.join(data_dir, RECORDS_DIR)
  os.makedirs(directory, exist_ok=True)
  examples = iter(examples)
  paths = []
  for index in range(count):
    path = os.path.join(directory, shard_name(split, index, count))
    # group_size:1 keeps every record individually addressable, which grain's random access needs;
    # uncompressed: the images are JPEG/PNG already, zstd would spend CPU for nothing (readers need no flag).
    writer = ArrayRecordWriter(path, "group_size:1,uncompressed")
    for example in itertools.islice(examples, examples_per_shard):
      writer.write(encode_record(example))
    writer.close()
    paths.append(path)
  return paths


def read_shard(path: str) -> list[dict]:
  """Every record of one local shard, decoded (for tests and inspection; the trainer streams via grain)."""
  from array_record.python.array_record_module import ArrayRecordReader

  reader = ArrayRecordReader(path)
  try:
    return [decode_record(data) for data in reader.read_all()]
  finally:
    reader.close()
