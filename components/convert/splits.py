"""Which split an example goes to, and a fingerprint of what each split holds.

Splits the source gives (Roboflow/COCO `train/valid/test` folders, a split column, VOC image sets, HF splits)
are kept. Every other example goes where a hash of its image's stable key sends it: `sha256(seed, key)`
read as a number in [0, 1), compared with the cumulative `--splits` fractions. An image's split is therefore
a pure function of (key, seed, fractions): appending images to a dataset never moves an image already there
to another split, which a seeded shuffle of the whole list would (it re-deals everything).

The key is `source_image`, the image's path relative to the source dataset root ('/'-separated), which
convert also writes on every JSONL row. Rows of one image share it, so they never straddle splits.
"""
from __future__ import annotations

import hashlib
import json
import posixpath

KEY = "source_image"
HASH = "sha256"


def source_key(image: str) -> str:
  """The stable key of a source image: its path relative to the dataset root, '/'-separated, normalised."""
  return posixpath.normpath(image.replace("\\", "/"))


def hash_unit(key: str, seed: int) -> float:
  """A uniform number in [0, 1) that depends only on `seed` and `key`."""
  digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(key: str, seed: int, fractions: tuple[tuple[str, float], ...]) -> str:
  """The split `key` hashes into: the first whose cumulative fraction exceeds its hash."""
  point = hash_unit(key, seed) * sum(f for _, f in fractions)
  cumulative = 0.0
  for name, fraction in fractions:
    cumulative += fraction
    if point < cumulative:
      return name
  return [name for name, fraction in fractions if fraction > 0][-1]  # float rounding at the very top


def rule(seed: int, fractions: tuple[tuple[str, float], ...], from_source: int, hashed: int) -> dict:
  """`report.json`'s `split_rule`: how this conversion split its examples."""
  if not hashed:
    return {"kind": "source", "examples_from_source": from_source}
  total = sum(f for _, f in fractions)
  return {"kind": "source+hash" if from_source else "hash", "key": KEY, "hash": HASH, "seed": seed,
          "fractions": {name: f / total for name, f in fractions}, "examples_from_source": from_source,
          "examples_hashed": hashed}


def fingerprint(examples: list[dict]) -> str:
  """`sha256:<hex>` over the split's examples (image key, prefix, suffix), in no particular order: it changes
  when an example is added, removed, moved to another split or relabelled, and only then."""
  lines = sorted(json.dumps([e[KEY], e["prefix"], e["suffix"]], ensure_ascii=False) for e in examples)
  return f"{HASH}:" + hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
