"""Kaggle downloads through kagglehub, with its cache, resume and md5 check, and plain-language errors.

kagglehub keeps files under `$KAGGLEHUB_CACHE/models/<owner>/<model>/<framework>/<variation>/<version>/`
with `.complete` markers: a versioned handle already cached makes no request. A partial file left by a
dropped connection is resumed with a Range request on the next call (when the server sends
`Accept-Ranges: bytes`), and the whole file is checked against the `x-goog-hash` md5 it announced.
"""
from __future__ import annotations

import glob
import json
import logging
import os

import kagglehub
import kagglehub.config
import requests
from kagglehub import exceptions as kexc

from components.download import secrets
from components.download.errors import ChecksumError, DownloadError, TransientError
from components.download.sources import Source, kaggle_parts

log = logging.getLogger(__name__)


def use_credentials_file(path: str) -> None:
  """Uses a mounted Kaggle credentials file: `{"username": ..., "key": ...}` (kaggle.json) or a file
  holding one API token. The values are registered for redaction and never logged."""
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError as e:
    raise DownloadError(f"cannot read the Kaggle credentials file {path}: {e.strerror}") from None
  try:
    creds = json.loads(text)
  except json.JSONDecodeError:
    creds = None
  if isinstance(creds, dict) and creds.get("username") and creds.get("key"):
    secrets.register(creds["key"])
    kagglehub.config.set_kaggle_credentials(creds["username"], creds["key"])
  elif isinstance(creds, dict) and creds.get("api_token"):
    secrets.register(creds["api_token"])
    kagglehub.config.set_kaggle_api_token(creds["api_token"])
  elif text and creds is None and len(text.split()) == 1:
    secrets.register(text)
    kagglehub.config.set_kaggle_api_token(text)
  else:
    raise DownloadError(f"{path} is not a Kaggle credentials file: expected kaggle.json "
                        '({"username": "...", "key": "..."}) or a file holding one API token')


def download(source: Source, dtype_file: str | None = None, force: bool = False) -> str:
  """The local path of the checkpoint file of kaggle:// `source` (in kagglehub's cache).

  Without a file in the URI, `dtype_file` names it; failing that the whole version is fetched and must
  hold exactly one `.npz`."""
  handle, file = kaggle_parts(source)
  file = file or dtype_file
  try:
    path = kagglehub.model_download(handle, path=file, force_download=force)
  except kexc.DataCorruptionError as e:
    raise ChecksumError(f"{source.uri}: the bytes Kaggle sent do not match their md5 ({_one_line(e)})") from None
  except kexc.KaggleApiHTTPError as e:
    raise _http_error(source, handle, e.response.status_code if e.response is not None else None) from None
  except kexc.UnauthenticatedError:
    raise _http_error(source, handle, 401) from None
  except requests.HTTPError as e:
    raise _http_error(source, handle, e.response.status_code if e.response is not None else None) from None
  if os.path.isdir(path):
    found = sorted(glob.glob(os.path.join(path, "**", "*.npz"), recursive=True))
    if len(found) != 1:
      names = [os.path.relpath(p, path) for p in found]
      raise DownloadError(f"{source.uri} holds {len(found)} .npz files {names}: add the file to the URI, "
                          f"e.g. {source.uri.rstrip('/')}/{names[0] if names else 'FILE.npz'}")
    path = found[0]
  return path


def _http_error(source: Source, handle: str, status: int | None) -> DownloadError:
  owner, model = handle.split("/")[:2]
  page = f"https://www.kaggle.com/models/{owner}/{model}"
  if status in (401, 403):
    return DownloadError(
        f"Kaggle refused access to {source.uri} (HTTP {status}). Accept the model's licence at {page} with the "
        "account whose key you use, and give that key through KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), "
        "a mounted file (--kaggle-credentials /secrets/kaggle.json) or ~/.kaggle/kaggle.json.")
  if status == 404:
    return DownloadError(f"Kaggle has no {source.uri} (HTTP 404): check the model name, variation, version and file "
                         f"name against {page}")
  if status == 429 or (status or 0) >= 500:
    return TransientError(f"Kaggle answered HTTP {status} for {source.uri}")
  return DownloadError(f"Kaggle answered HTTP {status} for {source.uri}")


def _one_line(e: Exception) -> str:
  return " ".join(str(e).split())
