"""Real local servers for the download tests (../shared/reference/STANDINS.md): the GCS emulator behind a
counting, fault-injecting proxy; a server speaking Kaggle's model API; a server speaking the HF hub's
resolve API. All on free loopback ports, started by the tests. Each server records every request and can
drop a connection mid-file once or serve tampered bytes (the GCS proxy can also stall), so tests can
assert what was fetched.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import http.server
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import urllib.parse

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
KAGGLE_USER, KAGGLE_KEY = "pg-test-user", "kaggle-key-5ecret-7f3a9c"
SITECUSTOMIZE = '''\
import os
if os.environ.get("TEST_KAGGLE_ENDPOINT"):
  from kagglesdk import kaggle_env
  kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.LOCAL] = os.environ["TEST_KAGGLE_ENDPOINT"]
'''


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------- faults
@dataclasses.dataclass
class Faults:
  """Per-server fault plan, keyed by a substring of the request path."""
  drop_once: dict = dataclasses.field(default_factory=dict)  # key -> bytes sent before the connection drops
  tamper: dict = dataclasses.field(default_factory=dict)  # key -> how many responses to corrupt (-1: all)
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

  def take(self, table: dict, path: str):
    with self.lock:
      for key in list(table):
        if key in path:
          value = table[key]
          if table is self.drop_once:
            del table[key]
          elif table is self.tamper:
            if value == 0:
              continue
            table[key] = value - 1 if value > 0 else value
          return value
    return None


def _tampered(data: bytes) -> bytes:
  i = len(data) // 2
  return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:] if data else data


class _Handler(http.server.BaseHTTPRequestHandler):
  """Common parts: request log, Range, faults."""
  server_version = "test"

  def log_message(self, *args):  # keep test output clean
    pass

  def record(self):
    self.server.requests.append({"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                                 "authorization": self.headers.get("Authorization")})

  def send_body(self, data: bytes, headers: dict, status: int = 200, head: bool = False):
    """Sends `data` honouring Range; applies the drop/tamper faults of this path."""
    start, end = 0, len(data) - 1
    rng = self.headers.get("Range")
    if rng and (m := re.match(r"bytes=(\d+)-(\d*)$", rng)):
      start = int(m.group(1))
      end = int(m.group(2)) if m.group(2) else len(data) - 1
      status = 206
      headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
    body = data[start:end + 1]
    if not head and self.server.faults.take(self.server.faults.tamper, self.path) is not None:
      body = _tampered(body)
    self.send_response(status)
    for k, v in {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes"}.items():
      self.send_header(k, v)
    self.end_headers()
    if head:
      return
    drop = self.server.faults.take(self.server.faults.drop_once, self.path)
    if drop is not None:
      self.wfile.write(body[:drop])
      self.wfile.flush()
      self.server.drops.append(self.path)
      self.connection.shutdown(socket.SHUT_RDWR)
      self.close_connection = True
      return
    self.wfile.write(body)
    self.server.bytes_sent += len(body)

  def send_json(self, obj, status: int = 200, headers: dict | None = None):
    data = json.dumps(obj).encode()
    self.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
      self.send_header(k, v)
    self.end_headers()
    self.wfile.write(data)


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True

  def __init__(self, handler):
    super().__init__(("127.0.0.1", free_port()), handler)
    self.requests, self.drops, self.bytes_sent, self.faults = [], [], 0, Faults()
    self.url = f"http://127.0.0.1:{self.server_address[1]}"
    threading.Thread(target=self.serve_forever, daemon=True).start()

  def handle_error(self, request, client_address):
    if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that hang up (killed, dropped) are expected
      super().handle_error(request, client_address)

  def reset(self):
    self.requests.clear()
    self.drops.clear()
    self.bytes_sent = 0
    self.faults = Faults()

  def close(self):
    self.shutdown()
    self.server_close()


# ------------------------------------------------------------------------------------------------ kaggle
class _KaggleHandler(_Handler):
  """Kaggle's model API: the RPCs kagglehub calls, with Basic/Bearer auth, md5 x-goog-hash, Range, 302."""
  RPC = "/api/v1/models.ModelApiService/"

  def do_POST(self):
    self.record()
    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
    if not self.path.startswith(self.RPC):
      return self.send_json({"code": 404, "message": "no such RPC"}, 404)
    if not self.server.authorized(self.headers.get("Authorization")):
      return self.send_json({"code": 401, "message": "Unauthenticated"}, 401)
    if self.server.outages:  # a server having a bad moment: answer this many calls with the status given
      return self.send_json({"code": 503, "message": "Service Unavailable"}, self.server.outages.pop())
    rpc = self.path[len(self.RPC):]
    framework = body.get("framework", "").removeprefix("MODEL_FRAMEWORK_").lower()
    instance = f"{body.get('ownerSlug')}/{body.get('modelSlug')}/{framework}/{body.get('instanceSlug')}"
    versions = {int(k.rsplit("/", 1)[1]) for k in self.server.models if k.rsplit("/", 1)[0] == instance}
    if rpc == "GetModelInstance":
      if not versions:
        return self.send_json({"code": 404, "message": "Not found"}, 404)
      return self.send_json({"versionNumber": max(versions)})
    handle = f"{instance}/{body.get('versionNumber')}"
    model_files = self.server.models.get(handle)
    if model_files is None:
      return self.send_json({"code": 404, "message": "Not found"}, 404)
    if handle in self.server.licence_not_accepted:
      return self.send_json({"code": 403, "message": "Permission 'models.get' was denied"}, 403)
    if rpc == "ListModelInstanceVersionFiles":
      return self.send_json({"files": [{"name": n, "size": len(d)} for n, d in model_files.items()],
                             "nextPageToken": ""})
    if rpc == "DownloadModelInstanceVersion":
      path = body.get("path")
      if path not in model_files:
        return self.send_json({"code": 404, "message": "Not found"}, 404)
      if self.server.redirect:  # like Kaggle: a 302 to a signed storage URL
        self.send_response(302)
        self.send_header("Location", f"{self.server.url}/blobs/{handle}/{path}?sig=s1gn3d")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return
      return self._send_file(model_files[path])
    return self.send_json({"code": 404, "message": f"unknown RPC {rpc}"}, 404)

  def do_GET(self):
    self.record()
    path = urllib.parse.urlparse(self.path).path
    if not path.startswith("/blobs/"):
      return self.send_json({"code": 404, "message": "Not found"}, 404)
    rest = path[len("/blobs/"):].split("/")
    handle, file = "/".join(rest[:5]), "/".join(rest[5:])
    data = self.server.models.get(handle, {}).get(file)
    if data is None:
      return self.send_json({"code": 404, "message": "Not found"}, 404)
    self._send_file(data)

  def _send_file(self, data: bytes):
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    self.send_body(data, {"Content-Type": "application/octet-stream", "x-goog-hash": f"crc32c=AAAAAA==,md5={md5}"})


class KaggleServer(_Server):
  def __init__(self):
    super().__init__(_KaggleHandler)
    self.models: dict[str, dict[str, bytes]] = {}  # owner/model/framework/variation/version -> files
    self.redirect = True
    self.user, self.key = KAGGLE_USER, KAGGLE_KEY
    self.licence_not_accepted: set[str] = set()  # handles this user may not download (403)
    self.outages: list[int] = []  # statuses for the next RPCs (e.g. [503, 503])

  def authorized(self, header: str | None) -> bool:
    basic = "Basic " + base64.b64encode(f"{KAGGLE_USER}:{KAGGLE_KEY}".encode()).decode()
    return header in (basic, f"Bearer {KAGGLE_KEY}")


# -------------------------------------------------------------------------------------------------- hub
class _HubHandler(_Handler):
  """The hub's resolve API only (HEAD + GET with ETag, X-Repo-Commit, Content-Length, Range; X-Error-Code
  on errors; gated repos answer 401 without the right token). No repo-listing API: what the download
  step needs must work without it."""

  def do_HEAD(self):
    self._serve(head=True)

  def do_GET(self):
    self._serve(head=False)

  def _serve(self, head: bool):
    self.record()
    path = urllib.parse.urlparse(self.path).path
    srv = self.server
    if m := re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
      repo_id, revision, file = m.group(1), urllib.parse.unquote(m.group(2)), m.group(3)
      repo = self._repo(repo_id, revision)
      if repo is None:
        return
      data = repo["files"].get(file)
      if data is None:
        return self.send_json({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound"})
      etag = hashlib.sha256(data).hexdigest() if _lfs(file) else _git_sha1(data)
      headers = {"X-Repo-Commit": repo["commit"], "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
      if _lfs(file):
        headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
      return self.send_body(data, headers, head=head)
    self.send_json({"error": "not found"}, 404)

  def _repo(self, repo_id: str, revision: str):
    repo = self.server.repos.get(repo_id)
    if repo is None:
      self.send_json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
      return None
    if repo.get("token") and self.headers.get("Authorization") != f"Bearer {repo['token']}":
      self.send_json({"error": "Access to this model is restricted"}, 401, {"X-Error-Code": "GatedRepo"})
      return None
    if revision not in ("main", repo["commit"]):
      self.send_json({"error": "Revision not found"}, 404, {"X-Error-Code": "RevisionNotFound"})
      return None
    return repo


def _lfs(name: str) -> bool:
  return name.endswith((".safetensors", ".model"))


def _git_sha1(data: bytes) -> str:
  return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubServer(_Server):
  def __init__(self):
    super().__init__(_HubHandler)
    self.repos: dict[str, dict] = {}  # org/repo -> {"commit", "files": {name: bytes}, "token"}

  def add_repo(self, repo_id: str, files: dict[str, bytes], token: str | None = None) -> str:
    digests = sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())
    commit = hashlib.sha1(repr(digests).encode()).hexdigest()
    self.repos[repo_id] = {"commit": commit, "files": files, "token": token}
    return commit

  def data_requests(self):
    return [r for r in self.requests if r["method"] == "GET" and "/resolve/" in r["path"]]


# ------------------------------------------------------------------------------------------- GCS proxy
class _ProxyHandler(_Handler):
  """Forwards everything to the emulator; media reads (`alt=media`) get the faults and are counted."""
  protocol_version = "HTTP/1.0"

  def _forward(self):
    self.record()
    body = self.rfile.read(int(self.headers["Content-Length"])) if self.headers.get("Content-Length") else None
    media = "alt=media" in self.path and self.command == "GET"
    if media:
      with self.server.faults.lock:
        index = self.server.media_started
        self.server.media_started += 1
      if self.server.stall_after is not None and index >= self.server.stall_after[0]:
        self.server.stall_after[1].wait(60)
    conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "range")}
    if media:  # the proxy applies Range itself, so drops and tampering hit exactly the bytes asked for
      conn.request(self.command, self.path, body=body, headers=headers)
    else:
      conn.request(self.command, self.path, body=body, headers={**headers, **(
          {"Range": self.headers["Range"]} if self.headers.get("Range") else {})})
    resp = conn.getresponse()
    data = resp.read()
    upstream, here = f"127.0.0.1:{self.server.upstream_port}", self.server.url[len("http://"):]
    resp_headers = {k: v.replace(upstream, here) for k, v in resp.getheaders()  # e.g. a resumable upload's Location
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-range")}
    conn.close()
    if not media:  # metadata carries the emulator's own address (mediaLink): send the client back here
      data = data.replace(upstream.encode(), here.encode())
    if media and resp.status == 200:
      self.server.media.append((urllib.parse.unquote(self.path.split("?")[0]), self.headers.get("Range")))
      return self.send_body(data, resp_headers)
    self.send_response(resp.status)
    for k, v in {**resp_headers, "Content-Length": str(len(data))}.items():
      self.send_header(k, v)
    self.end_headers()
    self.wfile.write(data)

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward


class GcsProxy(_Server):
  def __init__(self, upstream_port: int):
    self.upstream_port = upstream_port
    super().__init__(_ProxyHandler)
    self.media: list[tuple[str, str | None]] = []  # (object path, Range) of each media read served
    self.media_started = 0
    self.stall_after: tuple[int, threading.Event] | None = None  # (n, event): hold media reads after the n-th

  def reset(self):
    super().reset()
    self.media.clear()
    self.media_started = 0
    self.stall_after = None


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def gcs_server():
  """The GCS emulator (in memory) behind a proxy; yields the proxy (its url is STORAGE_EMULATOR_HOST)."""
  from gcp_storage_emulator.server import create_server

  port = free_port()
  emulator = create_server("127.0.0.1", port, in_memory=True)
  emulator.start()
  proxy = GcsProxy(port)
  proxy.emulator = emulator
  yield proxy
  proxy.close()
  emulator.stop()


@pytest.fixture(scope="session")
def kaggle_server():
  server = KaggleServer()
  yield server
  server.close()


@pytest.fixture(scope="session")
def hub_server():
  server = HubServer()
  yield server
  server.close()


@pytest.fixture
def servers(gcs_server, kaggle_server, hub_server, tmp_path, monkeypatch):
  """All three servers, reset, with this process (and `env` for subprocesses) pointed at them; caches
  and HOME in tmp_path; no credentials unless a test sets them."""
  import huggingface_hub.constants as hub_constants
  import kagglehub.config
  from kagglesdk import kaggle_env

  for s in (gcs_server, kaggle_server, hub_server):
    s.reset()
  gcs_server.emulator.wipe()
  kaggle_server.models.clear()
  kaggle_server.licence_not_accepted.clear()
  kaggle_server.outages.clear()
  kaggle_server.redirect = True
  hub_server.repos.clear()
  site = tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
  env = {
      "STORAGE_EMULATOR_HOST": gcs_server.url, "GOOGLE_CLOUD_PROJECT": "test-project",
      # google-cloud-storage 3.17 fetches each bucket's metadata in a background thread (for trace
      # attributes); that GET lands at any time, also after a test's reset, in the requests it counts.
      "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA": "true",
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "FSSPEC_GS_TOKEN": "anon",
      "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "TEST_KAGGLE_ENDPOINT": kaggle_server.url,
      "KAGGLEHUB_CACHE": str(tmp_path / "kagglehub"), "HF_ENDPOINT": hub_server.url,
      "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
      "HOME": str(tmp_path / "home"), "KAGGLE_CONFIG_DIR": str(tmp_path / "home" / ".kaggle"),
  }
  (tmp_path / "home").mkdir()
  for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "HF_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"):
    monkeypatch.delenv(var, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.LOCAL, kaggle_server.url)
  monkeypatch.setattr(hub_constants, "ENDPOINT", hub_server.url)
  monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                      hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
  monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
  monkeypatch.setattr("components.download.core.RETRY_WAIT_S", 0.0)
  kagglehub.config.clear_kaggle_credentials()
  subprocess_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "HF_"))}, **env,
                    "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
  yield Servers(gcs_server, kaggle_server, hub_server, subprocess_env, tmp_path)
  kagglehub.config.clear_kaggle_credentials()


@dataclasses.dataclass
class Servers:
  gcs: GcsProxy
  kaggle: KaggleServer
  hub: HubServer
  env: dict
  tmp: pathlib.Path

  def gcs_client(self):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test-project", credentials=AnonymousCredentials())

  def put_gcs(self, uri: str, data: bytes):
    bucket, name = uri[len("gs://"):].split("/", 1)
    client = self.gcs_client()
    b = client.bucket(bucket)
    if not b.exists():
      client.create_bucket(bucket)
    b.blob(name).upload_from_string(data)

  def run_cli(self, *args, env: dict | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "components.download", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**self.env, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="session")
def make_npz():
  """make_npz(megabytes) -> bytes of a checkpoint-shaped .npz (img/... and llm/... arrays, random)."""
  def make(megabytes: float) -> bytes:
    rng = np.random.default_rng(int(megabytes * 1000))
    n = int(megabytes * 2**20 / 4)
    buf = io.BytesIO()
    np.savez(buf, **{"img/embedding/kernel": rng.standard_normal(n // 2, dtype=np.float32),
                     "llm/embedder/input_embedding": rng.standard_normal(n - n // 2, dtype=np.float32)})
    return buf.getvalue()
  return make


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
  """A tiny-v2 big_vision checkpoint (bf16, random) and a small real sentencepiece tokenizer, as bytes."""
  from components.paligemma import checkpoint, configs, train_small_tokenizer

  d = tmp_path_factory.mktemp("tiny")
  shapes = checkpoint.param_shapes(configs.model_config("tiny-v2"))
  rng = np.random.default_rng(0)
  params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
  checkpoint.save(params, str(d / "tiny.npz"), dtype="bfloat16")
  train_small_tokenizer(str(d / "tokenizer.model"), vocab_size=1500)
  return {"npz": (d / "tiny.npz").read_bytes(), "tokenizer": (d / "tokenizer.model").read_bytes()}
