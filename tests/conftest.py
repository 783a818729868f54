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
