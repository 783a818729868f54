"""Google Cloud Storage transfers: parallel ranged download that resumes, crc32c-checked; checked upload.

Why not `transfer_manager.download_chunks_concurrently`: it truncates the target file on every call and
keeps no record of finished chunks (so a preempted 55 GB download starts over) and has no progress hook.
Here each chunk is a ranged GET written in place, finished chunks are journalled next to the partial
file, and the whole file is checked against the object's crc32c at the end (one read pass, done while
hashing sha256 for the manifest anyway).
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import threading

import google.auth.exceptions
from google.api_core import exceptions as gexc
from google.cloud import storage

from components.download import files
from components.download.errors import ChecksumError, DownloadError
from components.download.sources import gcs_parts

CHUNK_BYTES = 64 * 2**20
MAX_WORKERS = 8

log = logging.getLogger(__name__)


def client() -> storage.Client:
  """A client on application-default credentials, or anonymous (public buckets) when there are none."""
  try:
    return storage.Client()
  except (google.auth.exceptions.DefaultCredentialsError, OSError):
    log.info("no Google application-default credentials; reading GCS anonymously (public buckets only)")
    return storage.Client.create_anonymous_client()


def get_blob(uri: str, gcs: storage.Client) -> storage.Blob:
  bucket, name = gcs_parts(uri)
  try:
    blob = gcs.bucket(bucket).get_blob(name)
  except (gexc.Unauthorized, gexc.Forbidden) as e:
    raise DownloadError(f"GCS refused access to {uri} ({e.code}): run `gcloud auth application-default login` or set "
                        "GOOGLE_APPLICATION_CREDENTIALS to a service account key that can read the bucket") from e
  if blob is None:
    raise DownloadError(f"{uri} does not exist: check the bucket and object name (`gcloud storage ls {uri}`)")
  return blob


def download(uri: str, dest: str, gcs: storage.Client, chunk_bytes: int = CHUNK_BYTES,
             max_workers: int = MAX_WORKERS) -> files.Digest:
  """Downloads object `uri` to `dest` (atomically), resuming a partial download of the same generation."""
  blob = get_blob(uri, gcs)
  part, journal_path = dest + ".partial", dest + ".partial.json"
  todo, journal = _plan_chunks(blob, part, journal_path, chunk_bytes)
  lock = threading.Lock()
  done_bytes = blob.size - sum(end - start + 1 for start, end in todo)
  if done_bytes:
    log.info("resuming %s: %s of %s already here", uri, files.human(done_bytes), files.human(blob.size))

  with files.progress(blob.size, f"gs {blob.name.split('/')[-1]}", initial=done_bytes) as bar:
    def fetch(chunk: tuple[int, int]) -> None:
      start, end = chunk
      data = blob.download_as_bytes(start=start, end=end, checksum=None, raw_download=True)
      if len(data) != end - start + 1:
        raise ConnectionError(f"{uri}: asked for bytes {start}-{end}, got {len(data)} bytes")  # retried
      with open(part, "r+b") as f:
        f.seek(start)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      with lock:
        journal["done"].append(start)
        files.write_json_atomic(journal_path, journal)
        bar.update(len(data))

    with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
      for future in [pool.submit(fetch, c) for c in todo]:
        future.result()

  digest = files.digest(part, crc32c=True)
  if blob.crc32c and digest.crc32c != blob.crc32c:
    os.remove(part)
    os.remove(journal_path)
    raise ChecksumError(f"{uri}: crc32c of the downloaded bytes is {digest.crc32c}, GCS says {blob.crc32c}")
  os.replace(part, dest)
  os.remove(journal_path)
  return digest


def _plan_chunks(blob: storage.Blob, part: str, journal_path: str, chunk_bytes: int):
  """The (start, end) ranges still to fetch, and the journal; a stale partial (other object) starts over."""
  journal = None
  if os.path.exists(part) and os.path.exists(journal_path):
    with open(journal_path) as f:
      journal = json.load(f)
    if (journal.get("generation"), journal.get("size"), journal.get("chunk")) != (blob.generation, blob.size,
                                                                                 chunk_bytes):
      journal = None
  if journal is None:
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(part))).free
    if free < blob.size:
      raise DownloadError(f"{blob.name} needs {files.human(blob.size)} but {os.path.dirname(part)} has "
                          f"{files.human(free)} free: make room or choose another --output / --cache-dir")
    journal = {"generation": blob.generation, "size": blob.size, "chunk": chunk_bytes, "done": []}
    with open(part, "wb") as f:
      f.truncate(blob.size)
    files.write_json_atomic(journal_path, journal)
  done = set(journal["done"])
  todo = [(s, min(s + chunk_bytes, blob.size) - 1) for s in range(0, blob.size, chunk_bytes) if s not in done]
  return todo, journal


def upload(path: str, uri: str, gcs: storage.Client) -> None:
  """Uploads `path` to `uri`, crc32c-checked by the client. A GCS object appears only once its upload
  completes, so readers never see a half-written final object."""
  bucket, name = gcs_parts(uri)
  blob = gcs.bucket(bucket).blob(name, chunk_size=CHUNK_BYTES)
  size = os.path.getsize(path)
  try:
    with open(path, "rb") as f, files.progress(size, f"upload {os.path.basename(path)}") as bar:
      blob.upload_from_file(_ProgressReader(f, bar), size=size, checksum="crc32c")
  except (gexc.Unauthorized, gexc.Forbidden) as e:
    raise DownloadError(f"GCS refused the upload to {uri} ({e.code}): the credentials need write access to "
                        f"gs://{bucket} (roles/storage.objectCreator)") from e
  except gexc.NotFound:
    raise DownloadError(f"cannot upload to {uri}: bucket gs://{bucket} does not exist (create it, or fix --output)"
                        ) from None


class _ProgressReader:
  """A file object that advances a progress bar as the client reads it (seeks back on a retried chunk
  move the bar back too)."""

  def __init__(self, f, bar):
    self._f, self._bar = f, bar

  def read(self, n: int = -1) -> bytes:
    data = self._f.read(n)
    self._bar.update(len(data))
    return data

  def seek(self, offset: int, whence: int = 0) -> int:
    before = self._f.tell()
    after = self._f.seek(offset, whence)
    self._bar.update(after - before)
    return after

  def __getattr__(self, name):
    return getattr(self._f, name)


def read_text(uri: str, gcs: storage.Client) -> str | None:
  """The text of a small object, or None when it does not exist."""
  bucket, name = gcs_parts(uri)
  blob = gcs.bucket(bucket).get_blob(name)
  return None if blob is None else blob.download_as_text()


def crc32c_of(uri: str, gcs: storage.Client) -> str | None:
  """The object's crc32c, or None when it does not exist."""
  bucket, name = gcs_parts(uri)
  blob = gcs.bucket(bucket).get_blob(name)
  return None if blob is None else blob.crc32c
