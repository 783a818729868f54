"""Test-wide set-up: eight forced CPU devices (sharding tests), no accelerator probing, shared fixtures."""
import os
import pathlib
import re

# Must happen before jax is imported anywhere: tests compare 1 device against 8 in one process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
BIGVISION_FIXTURES = SHARED / "fixtures" / "bigvision"


@pytest.fixture(scope="session")
def hlo_dot_types():
  """A reader of lowered StableHLO text: the (lhs, rhs, result) element types of each dot_general, in order."""
  pattern = re.compile(r"stablehlo\.dot_general[^\n]*?: \(tensor<[^>]*x([a-z]+\d+)>, tensor<[^>]*x([a-z]+\d+)>\) "
                       r"-> tensor<[^>]*x([a-z]+\d+)>")
  return lambda hlo_text: pattern.findall(hlo_text)


@pytest.fixture(scope="session")
def bigvision_fixtures() -> pathlib.Path:
  if not BIGVISION_FIXTURES.is_dir():
    pytest.skip(f"big_vision fixtures not found at {BIGVISION_FIXTURES} (expected ../shared beside the checkout)")
  return BIGVISION_FIXTURES


@pytest.fixture
def gcs_emulator():
  """An in-memory GCS emulator on a free loopback port (../shared/reference/STANDINS.md).

  Yields `(env, client)`: `env` points gcsfs and google-cloud-storage at the emulator (hand it to
  subprocesses: gcsfs reads it at import) and `client` is an anonymous storage client talking to it, for
  creating buckets. The download tests put a fault-injecting proxy in front instead (tests/download).
  """
  server_module = pytest.importorskip("gcp_storage_emulator.server", reason="gcp-storage-emulator is not installed")
  import socket

  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = server_module.create_server("127.0.0.1", port, in_memory=True)
  server.start()
  env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
         "FSSPEC_GS_TOKEN": "anon", "GOOGLE_CLOUD_PROJECT": "test-project"}
  try:
    yield env, storage.Client(project="test-project", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]})
  finally:
    server.stop()


@pytest.fixture(scope="session")
def headers_only_npz():
  """`headers_only_npz(path, shapes, descr="<f4")`: an .npz whose members hold a valid .npy header and no
  data (under big_vision's optional `params/` prefix). Full-size checkpoints for tests that read shapes only."""
  import zipfile

  import numpy as np

  def write(path, shapes, descr="<f4"):
    with zipfile.ZipFile(path, "w") as zf:
      for name, shape in shapes.items():
        with zf.open(f"params/{name}.npy", "w") as f:
          np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return str(path)
  return write


@pytest.fixture
def gcs_emulator_with_preconditions(gcs_emulator, monkeypatch):
  """`gcs_emulator`, taught GCS's `ifGenerationMatch` on uploads (the stock one ignores it,
  ../shared/reference/STANDINS.md): 412 unless the object's live generation is the one given (0: absent).
  Its server handles one request at a time, so the check and the write are one step, as on GCS."""
  from http import HTTPStatus

  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  insert = objects.insert

  def insert_if_generation_matches(request, response, storage):
    wanted = request.query.get("ifGenerationMatch")
    if wanted:
      name = request.query["name"][0] if "name" in request.query else request.data["meta"]["name"]
      current = storage.objects.get(request.params["bucket_name"], {}).get(name)
      if int(wanted[0]) != (int(current["generation"]) if current else 0):
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did "
                                 "not hold.", "errors": [{"reason": "conditionNotMet"}]}})
        return
    insert(request, response, storage)

  monkeypatch.setattr(objects, "insert", insert_if_generation_matches)
  for _, handlers in server.HANDLERS:
    if handlers.get(server.POST) is insert:
      monkeypatch.setitem(handlers, server.POST, insert_if_generation_matches)
  return gcs_emulator
