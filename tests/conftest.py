"""Test-wide set-up: eight forced CPU devices (sharding tests), no accelerator probing, shared fixtures."""
import os
import pathlib

# Must happen before jax is imported anywhere: tests compare 1 device against 8 in one process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
BIGVISION_FIXTURES = SHARED / "fixtures" / "bigvision"


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
