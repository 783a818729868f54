"""Atomic writes: a reader sees the old file or the complete new one, never a half-written one; and
`exchange(a, b)`, which swaps two paths in one step where Linux offers it.

Local files are written under a hidden temporary name in the same folder, then renamed over the target
(a rename is atomic on one file system). The temporary file is created as an ordinary `open` would create
it (mode 0666 less the umask), not with `mkstemp`'s private 0600: outputs are meant to be read by others.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import pathlib
import secrets
from typing import Any, Callable

import fsspec

_UPLOAD_BLOCK = 2**26  # bytes sent per request on object stores
log = logging.getLogger(__name__)


def write_atomic(path: str, write: Callable[[Any], None]) -> None:
  """Calls `write(file)` on a temporary binary file beside `path`, then renames it to `path` (local or fsspec URL).

  A crash leaves either the old file or the complete new one. On object stores we copy then delete instead
  of `fs.mv`: gcsfs first tries the `moveTo` API, which flat buckets (and the GCS emulator) refuse only after
  retrying for half a minute.
  """
  path = str(path)
  if "://" in path:
    fs, fs_path = fsspec.core.url_to_fs(path)
    tmp = f"{fs_path}.tmp-{os.getpid()}"
    try:
      with fs.open(tmp, "wb", block_size=_UPLOAD_BLOCK) as f:  # upload in large chunks
        write(f)
      fs.copy(tmp, fs_path)
    finally:
      if fs.exists(tmp):
        fs.rm(tmp)
    return
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{name}.tmp-{secrets.token_hex(4)}")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  """`obj` as indented JSON with sorted keys and a final newline (the layout of model.json, config.json)."""
  text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
  write_atomic(path, lambda f: f.write(text.encode("utf-8")))


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: str | pathlib.Path, b: str | pathlib.Path) -> bool:
  """Swaps two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable
  (no glibc wrapper, or the filesystem refuses), leaving both untouched. Python's os has no binding for it."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd = -100
  result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
  if result != 0:
    log.debug("renameat2 exchange unavailable (%s); falling back to two renames", os.strerror(ctypes.get_errno()))
    return False
  return True
