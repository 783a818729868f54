"""Local file helpers: digests (sha256 + crc32c in one pass), atomic writes, progress bars."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import sys

import google_crc32c
import tqdm

# write_json_atomic is re-exported: the download modules call it as files.write_json_atomic.
from components.common.atomic import write_atomic, write_json_atomic  # noqa: F401

READ_BYTES = 8 * 2**20
# Files smaller than this are hashed without a progress bar (tokenizers, json).
PROGRESS_MIN_BYTES = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class Digest:
  size: int
  sha256: str
  crc32c: str | None = None  # base64 of the big-endian crc, as GCS reports it


def progress(total: int, desc: str, initial: int = 0) -> tqdm.tqdm:
  """A byte progress bar (bytes, rate, ETA) on stderr."""
  return tqdm.tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                   file=sys.stderr, mininterval=1.0, disable=None if total >= PROGRESS_MIN_BYTES else True)


def digest(path: str, crc32c: bool = False) -> Digest:
  sha, crc = hashlib.sha256(), google_crc32c.Checksum() if crc32c else None
  size = os.path.getsize(path)
  with open(path, "rb") as f, progress(size, f"verify {os.path.basename(path)}") as bar:
    while chunk := f.read(READ_BYTES):
      sha.update(chunk)
      if crc is not None:
        crc.update(chunk)
      bar.update(len(chunk))
  crc_b64 = base64.b64encode(crc.digest()).decode() if crc is not None else None
  return Digest(size, sha.hexdigest(), crc_b64)


def place(src: str, dest: str) -> None:
  """Puts a copy of `src` (a client cache file) at `dest` atomically: a hard link when both are on one
  file system (no second copy of a 55 GB file), else a copy."""
  tmp = f"{dest}.tmp{os.getpid()}"
  if os.path.lexists(tmp):
    os.remove(tmp)
  try:
    os.link(src, tmp)
  except OSError:
    shutil.copyfile(src, tmp)
  os.replace(tmp, dest)


def copy(src: str, dest: str) -> None:
  """Copies `src` to `dest` atomically, with a progress bar for big files."""
  size = os.path.getsize(src)

  def write(fout) -> None:
    with open(src, "rb") as fin, progress(size, f"copy {os.path.basename(src)}") as bar:
      while chunk := fin.read(READ_BYTES):
        fout.write(chunk)
        bar.update(len(chunk))

  write_atomic(dest, write)


def human(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024:
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return f"{n:.1f} TiB"
