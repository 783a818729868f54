"""big_vision `.npz` checkpoints: flat `/`-joined names, one `.npy` member per parameter (PALIGEMMA.md §1).

Loading reads ONE array at a time straight from the zip member into its final numpy buffer: an `.npz` is
a zip of `.npy` files and nothing forces us to inflate it whole, so a 12 GB f32 PaliGemma-3B needs about
12 GB of host memory (plus one array while the position embedding is resampled), never twice its size.
Each member's header is checked (name, dtype, shape) before its data is read, so a checkpoint for the
wrong model fails in milliseconds instead of after minutes of reading.

Stored dtypes are kept (f32, bf16, f16); numpy writes bf16 as 2-byte void (`<V2`/`|V2`), read back as
`ml_dtypes.bfloat16`. Paths may be local or any fsspec URL (gs:// through gcsfs).
"""
from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
import zipfile
import zlib
from typing import Any, Iterator, Mapping

import fsspec
import ml_dtypes
import numpy as np
import scipy.ndimage

from components.common.atomic import write_atomic

log = logging.getLogger(__name__)

POSEMB = "img/pos_embedding"
_PREFIX = "params/"
_HEADER_BLOCK, _DATA_BLOCK = 2**16, 2**26  # read-ahead per request on object stores
_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float16": np.dtype(np.float16)}


class CheckpointError(ValueError):
  """A checkpoint file that cannot be loaded into the requested model."""


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"img": {"head": {"bias": x}}} -> {"img/head/bias": x} (big_vision's flat names)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_params(value, name + "/"))
    else:
      flat[name] = value
  return flat


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `flatten_params`."""
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def param_shapes(model_cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Flat name -> shape of the parameters of `Model(**model_cfg)`, from `jax.eval_shape` (no memory)."""
  import jax
  import jax.numpy as jnp

  from components.paligemma import configs, model  # imported here: they import jax and flax

  size = configs.image_size(model_cfg)
  pali = model.Model(**model_cfg)
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  text = jax.ShapeDtypeStruct((1, 2), jnp.int32)
  variables = jax.eval_shape(pali.init, jax.random.PRNGKey(0), image, text, text)
  return {k: tuple(v.shape) for k, v in flatten_params(variables["params"]).items()}


def load(path: str, model_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Loads a big_vision `.npz` into a nested dict of numpy arrays, each in its stored dtype.

  With `model_cfg`, every array must exist with the shape `Model(**model_cfg)` expects (no missing or
  extra arrays); `img/pos_embedding` is resampled when the checkpoint's resolution differs.
  Without it, the file is loaded as stored.
  """
  return unflatten_params(load_flat(path, None if model_cfg is None else param_shapes(model_cfg)))


def load_flat(path: str, expected: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
  """`load` on flat names; `expected` maps each flat name to its shape (None: accept what is stored)."""
  return dict(iter_arrays(path, expected))


def iter_arrays(path: str, expected: Mapping[str, tuple[int, ...]] | None = None
                ) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (flat name, array) one at a time, after checking every header against `expected`.

  For callers that place each array on devices and drop the host copy (`del` it in the loop body): host
  memory then stays at one array.
  """
  path = str(path)
  members, headers = _read_headers(path, expected)
  if expected is not None:
    for name, (shape, _) in headers.items():
      _check_shape(name, shape, tuple(expected[name]), path)
  with _open_zip(path, _DATA_BLOCK) as zf:  # large blocks: one request per block on object stores
    progress = _Progress(f"read {path}", sum(zf.getinfo(m).file_size for m in members.values()))
    for name, member in members.items():
      array = _read_data(zf, member, name, path, headers[name][0])
      if expected is not None and array.shape != tuple(expected[name]):
        log.info("resampling %s from %s to %s (bilinear, as big_vision)", name, array.shape, expected[name])
        array = resample_posemb(array, expected[name][1])
      progress.update(name, zf.getinfo(member).file_size)
      yield name, array
      del array  # before reading the next one: a caller that dropped it holds no host copy
    progress.finish()


def read_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """Flat name -> shape of every array of an `.npz`, local or any fsspec URL, from the zip directory and
  each member's `.npy` header only (a few hundred bytes per array; no array data is read)."""
  _, headers = _read_headers(str(path))
  return {name: shape for name, (shape, _) in headers.items()}


def infer_config(path: str):
  """`configs.InferredModel` (name, model_cfg) of an `.npz` from its array shapes (`configs.infer_model_config`);
  a CheckpointError naming the file when the arrays are no PaliGemma model."""
  from components.paligemma import configs  # imported here: configs imports jax

  path = str(path)
  try:
    return configs.infer_model_config(read_shapes(path), file_name=path)
  except ValueError as e:
    if isinstance(e, CheckpointError):
      raise
    raise CheckpointError(f"{path}: cannot tell which PaliGemma configuration it holds: {e}. Put the model.json "
                          "of its model directory beside it (or download it with --model NAME --source URI)") from None


def _read_headers(path: str, expected: Mapping[str, Any] | None = None):
  """(parameter name -> zip member, parameter name -> (shape, dtype)) from the headers alone."""
  with _open_zip(path, _HEADER_BLOCK) as zf:  # small blocks: a few hundred bytes per member
    members = _member_names(zf, path)
    if expected is not None:
      _check_names(path, members, expected)
    return members, {name: _read_header(zf, member, name, path) for name, member in members.items()}


@contextlib.contextmanager
def _open_zip(path: str, block_size: int) -> Iterator[zipfile.ZipFile]:
  """The `.npz` as a zip. Remote files read ahead `block_size` bytes per request (local files ignore it):
  numpy reads members in 256 KiB pieces, which would otherwise each cost a round trip."""
  fs, fs_path = fsspec.core.url_to_fs(path)
  if not fs.exists(fs_path):
    raise FileNotFoundError(f"checkpoint {path} not found; pass the .npz written by download or finetune")
  with fs.open(fs_path, "rb", cache_type="readahead", block_size=block_size) as f:
    try:
      zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise CheckpointError(f"{path} is not a readable .npz ({e}){_where_cut(f)}: the file is corrupt or "
                            "truncated; download it again") from e
    with zf:
      yield zf


def _where_cut(f) -> str:
  """For a zip whose directory (at the end) is gone: the array the file ends in, from the members' own
  headers at the front of each (np.savez writes their sizes there). Empty when that cannot be told."""
  f.seek(0, os.SEEK_END)
  size, pos, last = f.tell(), 0, None
  while pos + 30 <= size:
    f.seek(pos)
    head = f.read(30)
    if head[:4] == b"PK\x01\x02" and last:  # the directory that follows the last member
      return f"; every array up to {last!r} is complete, the zip directory after it is cut"
    if head[:4] != b"PK\x03\x04":
      break
    flags, csize, name_len, extra_len = struct.unpack("<H10xI4xHH", head[6:30])
    name = f.read(name_len).decode(errors="replace").removesuffix(".npy")
    extra = f.read(extra_len)
    if csize == 0xFFFFFFFF and extra[:2] == b"\x01\x00":  # zip64: sizes in the extra field
      csize = struct.unpack("<Q", extra[12:20])[0]
    if flags & 0x08:  # sizes follow the data: cannot walk further
      break
    pos += 30 + name_len + extra_len + csize
    if pos > size:
      return f"; it ends inside array {name!r}" + (f", after {last!r}" if last else "")
    last = name
  return ""


def _member_names(zf: zipfile.ZipFile, path: str) -> dict[str, str]:
  """Parameter name (without `.npy` and an optional `params/` prefix) -> zip member name."""
  members = {}
  for member in zf.namelist():
    name = member[:-len(".npy")] if member.endswith(".npy") else member
    name = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    if name in members:
      raise CheckpointError(f"{path}: array {name!r} is stored twice ({members[name]!r} and {member!r})")
    members[name] = member
  return members


def _check_names(path: str, members: Mapping[str, str], expected: Mapping[str, Any]) -> None:
  missing = sorted(set(expected) - set(members))
  unexpected = sorted(set(members) - set(expected))
  problems = []
  if missing:
    problems.append(f"missing array(s) {', '.join(missing)}")
  if unexpected:
    problems.append(f"unexpected array(s) {', '.join(unexpected)}")
  if problems:
    raise CheckpointError(f"{path}: {'; '.join(problems)}. The checkpoint does not match the model config; "
                          "check that model.json (llm/img variant and overrides) belongs to this checkpoint")


def _corrupt(path: str, name: str, e: Exception) -> CheckpointError:
  return CheckpointError(f"{path}: array {name!r} cannot be read ({e}): the file is corrupt or truncated; "
                         "download it again")


def _read_header(zf: zipfile.ZipFile, member: str, name: str, path: str) -> tuple[tuple[int, ...], np.dtype]:
  """(shape, dtype) from the `.npy` header, without reading the data; refuses objects and non-floats."""
  try:
    with zf.open(member) as fp:
      version = np.lib.format.read_magic(fp)
      shape, _, dtype = (np.lib.format.read_array_header_1_0(fp) if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(fp))
  except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as e:
    raise _corrupt(path, name, e) from e
  if dtype.hasobject:
    raise CheckpointError(f"{path}: array {name!r} holds Python objects (a pickled array); refusing to "
                          "unpickle it. Re-save the checkpoint with plain float arrays (components.paligemma.save)")
  if not (dtype.kind == "f" or (dtype.kind == "V" and dtype.itemsize == 2 and dtype.names is None)):
    raise CheckpointError(f"{path}: array {name!r} has dtype {dtype}, parameters must be float32, bfloat16 "
                          "or float16. Re-save it with components.paligemma.save")
  return tuple(shape), dtype


def _check_shape(name: str, got: tuple[int, ...], want: tuple[int, ...], path: str) -> None:
  if got == want:
    return
  if name == POSEMB and _is_grid(got) and _is_grid(want) and got[2] == want[2]:
    return  # another resolution: resampled once read
  raise CheckpointError(f"{path}: array {name!r} has shape {got}, the model config expects {want}; "
                        "check that model.json (variant, overrides, image size) belongs to this checkpoint")


def _read_data(zf: zipfile.ZipFile, member: str, name: str, path: str, shape: tuple[int, ...]) -> np.ndarray:
  """Reads one member into a single buffer (numpy reads a zip member in 256 KiB chunks into its result)."""
  try:
    with zf.open(member) as fp:
      array = np.lib.format.read_array(fp, allow_pickle=False)
  except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as e:
    raise _corrupt(path, name, e) from e
  if array.shape != shape:
    raise _corrupt(path, name, ValueError(f"read {array.size} of {np.prod(shape)} values"))
  return array.view(ml_dtypes.bfloat16) if array.dtype.kind == "V" else array


def _is_grid(shape) -> bool:
  return len(shape) == 3 and shape[0] == 1 and round(np.sqrt(shape[1])) ** 2 == shape[1]


def resample_posemb(posemb: np.ndarray, num_tokens: int) -> np.ndarray:
  """[1, g*g, D] -> [1, num_tokens, D] as a bilinear zoom of the g×g grid (big_vision's resample_posemb).

  scipy cannot zoom bfloat16/float16, so the grid is zoomed in float32 and cast back to the stored dtype.
  """
  g_old, g_new = round(np.sqrt(posemb.shape[1])), round(np.sqrt(num_tokens))
  grid = posemb.reshape(g_old, g_old, -1).astype(np.float32)
  grid = scipy.ndimage.zoom(grid, (g_new / g_old, g_new / g_old, 1), order=1)
  return grid.reshape(1, g_new * g_new, -1).astype(posemb.dtype)


PROGRESS_SECONDS = 10.0  # at INFO, one progress line per this many seconds of a long read/write


class _Progress:
  """Progress of reading/writing a checkpoint: a line per array at DEBUG; at INFO one line per
  PROGRESS_SECONDS while it runs and one when it is done (`finish`)."""

  def __init__(self, what: str, total: int):
    self.what, self.total, self.done, self.arrays = what, total, 0, 0
    self.start = self._last = time.monotonic()

  def update(self, name: str, nbytes: int) -> None:
    self.done, self.arrays = self.done + nbytes, self.arrays + 1
    now = time.monotonic()
    rate = self.done / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate if rate else float("inf")
    level = logging.INFO if now - self._last >= PROGRESS_SECONDS and self.done < self.total else logging.DEBUG
    if level == logging.INFO:
      self._last = now
    log.log(level, "%s: %s (%.2f/%.2f GB, %.0f MB/s, ETA %.0f s)", self.what, name, self.done / 1e9,
            self.total / 1e9, rate / 1e6, eta)

  def finish(self) -> None:
    log.info("%s: %d arrays, %.2f GB in %.1f s", self.what, self.arrays, self.done / 1e9,
             time.monotonic() - self.start)


def save(params: Mapping[str, Any], path: str, dtype: str | np.dtype | None = None) -> str:
  """Writes params (nested dict, or flat `/` names) as a big_vision `.npz`, atomically. Returns path.

  `dtype` (float32, bfloat16, float16) casts every float array as it is written, one array at a time;
  None keeps each array's dtype. bf16 is stored as numpy stores it (2-byte void), as big_vision reads it.
  """
  path = str(path)
  cast = None if dtype is None else _float_dtype(dtype)
  flat = flatten_params(params)
  write_atomic(path, lambda f: _write_npz(f, flat, cast, path))
  return path


def _float_dtype(dtype) -> np.dtype:
  try:
    cast = np.dtype(dtype)  # "bfloat16", np.float16, jnp.bfloat16, ...
  except TypeError:
    cast = None
  if cast not in _DTYPES.values():
    raise ValueError(f"cannot save as dtype {dtype!r}; use one of {', '.join(_DTYPES)} (or None to keep it)")
  return cast


def _write_npz(f, flat: Mapping[str, Any], cast: np.dtype | None, path: str) -> None:
  """What `np.savez` writes (stored zip, one `.npy` per array), converting one array at a time."""
  progress = _Progress(f"write {path}", sum(np.dtype(v.dtype if cast is None else cast).itemsize * int(np.size(v))
                                            for v in flat.values()))
  with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
    for name, value in flat.items():
      array = np.asarray(value)  # also brings a jax array to host, one at a time
      if not (array.dtype.kind == "f" or array.dtype == _DTYPES["bfloat16"]):
        raise ValueError(f"cannot save parameter {name!r} of dtype {array.dtype}: parameters must be floats")
      if cast is not None:
        array = array.astype(cast, copy=False)
      with zf.open(name + ".npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)
      progress.update(name, array.nbytes)
  progress.finish()
