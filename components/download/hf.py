"""Hugging Face hub downloads: the transformers-layout files of a repo, converted to big_vision's .npz.

Files are fetched one by one with `hf_hub_download` (HEAD + GET on the hub's resolve API), all pinned to
the commit the first one resolves to: `config.json`, then the weights named by
`model.safetensors.index.json` (or `model.safetensors`), then `tokenizer.model` when the repo has one.
Unlike `snapshot_download` this needs no repo-listing API, so mirrors and proxies that serve only the
resolve API work too. huggingface_hub keeps its cache in `$HF_HUB_CACHE` (blobs + per-commit snapshots),
resumes a partial blob from its `.incomplete` file, and with a pinned commit (`hf://org/repo@<40 hex>`)
serves cached files without any request. The token comes from `HF_TOKEN` or a mounted file
(`--hf-credentials`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os

import huggingface_hub
from huggingface_hub import errors as hf_errors

from components.download import files, secrets
from components.download.errors import ChecksumError, DownloadError, TransientError
from components.download.sources import Source, hf_parts

CONFIG, WEIGHTS, WEIGHTS_INDEX, TOKENIZER = ("config.json", "model.safetensors", "model.safetensors.index.json",
                                             "tokenizer.model")

log = logging.getLogger(__name__)


def read_token_file(path: str) -> str:
  try:
    with open(path) as f:
      token = f.read().strip()
  except OSError as e:
    raise DownloadError(f"cannot read the Hugging Face token file {path}: {e.strerror}") from None
  if not token or len(token.split()) != 1:
    raise DownloadError(f"{path} should hold one Hugging Face access token")
  secrets.register(token)
  return token


def snapshot(source: Source, token: str | None = None, force: bool = False,
             only: str | None = None) -> tuple[str, str]:
  """(local snapshot directory, commit hash) of hf:// `source`: the checkpoint's files, or just the file
  `only` (e.g. the tokenizer)."""
  repo, revision = hf_parts(source)
  with _clear_errors(source):
    first = only or CONFIG
    path = _fetch(repo, first, revision, token, force, source)
    snap = path
    for _ in first.split("/"):  # the snapshot folder holds the file at its path in the repo
      snap = os.path.dirname(snap)
    commit = os.path.basename(snap)
    if only is None:
      for name in _weight_files(repo, commit, token, force, source):
        _fetch(repo, name, commit, token, force, source)
      try:
        huggingface_hub.hf_hub_download(repo, TOKENIZER, revision=commit, token=token, force_download=force)
      except hf_errors.LocalEntryNotFoundError as e:  # the hub did not answer: not "the repo has none"
        raise _unreachable(source, TOKENIZER, e) from None
      except hf_errors.EntryNotFoundError:
        pass  # a repo without tokenizer.model: the default one is used
  return snap, commit


def _weight_files(repo: str, commit: str, token: str | None, force: bool, source: Source) -> list[str]:
  try:
    index = huggingface_hub.hf_hub_download(repo, WEIGHTS_INDEX, revision=commit, token=token, force_download=force)
  except hf_errors.LocalEntryNotFoundError as e:
    raise _unreachable(source, WEIGHTS_INDEX, e) from None
  except hf_errors.EntryNotFoundError:
    return [WEIGHTS]
  with open(index) as f:
    weight_map = json.load(f).get("weight_map", {})
  if not weight_map:
    raise DownloadError(f"{source.uri}: {WEIGHTS_INDEX} names no weight files")
  return sorted(set(weight_map.values()))


def _fetch(repo: str, name: str, revision: str | None, token: str | None, force: bool, source: Source) -> str:
  try:
    return huggingface_hub.hf_hub_download(repo, name, revision=revision, token=token, force_download=force)
  except hf_errors.LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: the hub never answered
    raise _unreachable(source, name, e) from None
  except hf_errors.EntryNotFoundError:
    hint = ("give the tokenizer with --tokenizer URI" if name == TOKENIZER else "is this a transformers PaliGemma "
            "repo?" if name in (CONFIG, WEIGHTS, WEIGHTS_INDEX) else "check the file name in the URI")
    raise DownloadError(f"{source.uri} has no {name}: {hint}") from None


def _unreachable(source: Source, name: str, error: Exception) -> DownloadError:
  """A file that is neither cached nor fetched because the hub could not be reached: a network failure
  (retried), or offline mode (not)."""
  from huggingface_hub import constants

  if constants.HF_HUB_OFFLINE:
    return DownloadError(f"{name} of {source.uri} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                         "HF_HUB_OFFLINE is set: download it once with network access, or unset HF_HUB_OFFLINE")
  cause = error.__cause__ or error.__context__
  detail = f" ({type(cause).__name__})" if cause is not None else ""
  return TransientError(f"network failure: cannot reach the Hugging Face hub at {constants.ENDPOINT}{detail} for {name} "
                        f"of {source.uri}, and it is not in the cache; check the connection, HTTPS_PROXY or HF_ENDPOINT")


@contextlib.contextmanager
def _clear_errors(source: Source):
  """Turns the hub's HTTP errors into errors that say what to do."""
  repo, revision = hf_parts(source)
  page = f"https://huggingface.co/{repo}"
  try:
    yield
  except hf_errors.GatedRepoError:
    raise DownloadError(f"{source.uri} is gated (HTTP 401/403): accept the model's licence at {page} and set HF_TOKEN "
                        "(or --hf-credentials FILE) to a token of that account") from None
  except hf_errors.RevisionNotFoundError:
    raise DownloadError(f"{repo} has no revision {revision!r}: check the branch, tag or commit at {page}") from None
  except hf_errors.RepositoryNotFoundError as e:
    status = e.response.status_code if e.response is not None else None
    raise DownloadError(f"the hub has no repository {repo} it will show you (HTTP {status}): check the name; if it is "
                        f"private or gated, accept its licence at {page} and set HF_TOKEN (or --hf-credentials "
                        "FILE)") from None
  except hf_errors.LocalEntryNotFoundError as e:
    raise DownloadError(f"cannot reach the hub for {source.uri} and it is not in the cache ({e})") from None
  except hf_errors.HfHubHTTPError as e:
    status = e.response.status_code if e.response is not None else None
    error = TransientError if status == 429 or (status or 0) >= 500 else DownloadError
    raise error(f"the hub answered HTTP {status} for {source.uri}") from None


def convert(snapshot_dir: str, out_path: str, dtype: str | None) -> dict:
  """Writes the big_vision .npz of a transformers PaliGemma snapshot to `out_path` and returns its model_cfg."""
  from components.paligemma import from_hf, save  # the model library; imported here to keep this step light

  if not any(f.endswith(".safetensors") for f in os.listdir(snapshot_dir)):
    raise DownloadError(f"{snapshot_dir} has no .safetensors weights: is this a transformers PaliGemma repo?")
  log.info("converting the transformers checkpoint in %s to big_vision's layout", snapshot_dir)
  try:
    params, model_cfg = from_hf(snapshot_dir)
  except (ValueError, KeyError) as e:
    raise DownloadError(f"cannot convert the transformers checkpoint in {snapshot_dir} to big_vision's layout: {e}"
                        ) from None
  save(params, out_path, dtype=dtype)  # atomic: a temporary name, then a rename
  return model_cfg


def verify_snapshot(snapshot_dir: str) -> None:
  """Checks every file of a snapshot against the name of its cache blob: the sha256 of the bytes (LFS
  files) or the git blob sha1 (small files). huggingface_hub itself checks sizes only. A bad blob is
  deleted so that the next attempt fetches it again."""
  for root, _, names in os.walk(snapshot_dir):
    for name in names:
      link = os.path.join(root, name)
      blob = os.path.realpath(link)
      expected = os.path.basename(blob)
      if len(expected) == 64:
        actual = files.digest(blob).sha256
      elif len(expected) == 40:
        actual = _git_blob_sha1(blob)
      else:
        continue  # not a hub cache blob (e.g. a local_dir copy): nothing to check against
      if actual != expected:
        os.remove(blob)
        os.remove(link)
        raise ChecksumError(f"{os.path.relpath(link, snapshot_dir)} from the hub does not match its hash "
                            f"({actual} != {expected})")


def _git_blob_sha1(path: str) -> str:
  sha = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
  with open(path, "rb") as f:
    while chunk := f.read(files.READ_BYTES):
      sha.update(chunk)
  return sha.hexdigest()
