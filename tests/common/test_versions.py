"""Tested versions: constraints.txt pins every declared dependency inside its declared range, the package
version is written once, and the KFP local-runner fixes refuse a kfp they were not written against."""
import pathlib
import re
import tomllib

import kfp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import components
from pipelines import kfp_local_fix

REPO = pathlib.Path(__file__).resolve().parents[2]


def pinned() -> dict[str, Version]:
  pins = {}
  for line in (REPO / "constraints.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()).groups()
      pins[canonicalize_name(name)] = Version(version)
  return pins


def declared() -> list[Requirement]:
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  requirements = [Requirement(r) for r in project["dependencies"]]
  for extra in project["optional-dependencies"].values():
    requirements += [Requirement(r) for r in extra if not r.startswith(project["name"])]
  return requirements


def test_constraints_pin_every_dependency_within_its_declared_range():
  pins = pinned()
  for requirement in declared():
    name = canonicalize_name(requirement.name)
    assert name in pins, f"constraints.txt does not pin {name}: regenerate it (see its header)"
    version = Version(pins[name].base_version) if name == "torch" else pins[name]  # torch: the +cpu build
    assert requirement.specifier.contains(version, prereleases=True), f"{name}=={pins[name]} is outside {requirement}"


def test_no_unused_or_undeclared_dependency_names():
  names = {canonicalize_name(r.name) for r in declared()}
  assert "crcmod" not in names
  assert {"requests", "absl-py", "google-api-core", "google-auth"} <= names  # imported directly


def test_the_version_is_written_once():
  project = tomllib.loads((REPO / "pyproject.toml").read_text())
  assert project["project"]["dynamic"] == ["version"] and "version" not in project["project"]
  assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "components.__version__"}
  assert re.fullmatch(r"\d+\.\d+\.\d+", components.__version__)


def test_kfp_local_fixes_refuse_other_kfp_releases(monkeypatch):
  kfp_local_fix.check_version(kfp.__version__)  # the installed one is the tested one
  pin = pinned()["kfp"]
  kfp_local_fix.check_version(str(pin))
  for version in ("2.15.2", "2.17.0", "3.0.0"):
    with pytest.raises(kfp_local_fix.UnsupportedKfpError) as caught:
      kfp_local_fix.check_version(version)
    message = str(caught.value)
    assert "\n" not in message and f"kfp {version} is installed" in message
    assert "pip install 'kfp>=2.16,<2.17'" in message
  monkeypatch.setattr(kfp, "__version__", "2.17.0")
  with pytest.raises(kfp_local_fix.UnsupportedKfpError):
    kfp_local_fix.install()
