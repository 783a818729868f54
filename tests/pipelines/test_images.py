"""Step images: each Dockerfile installs the package with its flavor's extra, that dependency set resolves,
and every entry point the components call starts (`--help`)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipelines import images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ("download", "convert", "finetune", "evaluate", "export")
# What only the flavor's extra brings in: the accelerator runtime of jax.
ACCELERATOR_PACKAGE = {"gpu": "jax-cuda12-plugin", "tpu": "libtpu"}


def dockerfile(flavor: str) -> str:
  with open(os.path.join(REPO, "images", f"Dockerfile.{flavor}")) as f:
    return f.read()


@pytest.mark.parametrize("flavor", images.FLAVORS)
def test_dockerfile_installs_the_package_with_its_extra(flavor):
  text = dockerfile(flavor)
  extra = images.EXTRA[flavor]
  install = re.search(r'pip install "/tmp/src(\[[a-z]+\])?"', text)
  assert install, f"images/Dockerfile.{flavor} does not pip install the package"
  assert install.group(1) == (f"[{extra}]" if extra else None)
  assert f"paligemma-pipelines-{flavor}:VERSION" in text  # the tag infra/build_images.sh gives it
  for step in STEPS:
    assert step in text  # the build fails early if an entry point cannot start


def test_extras_exist_in_pyproject():
  import tomllib

  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  assert project["version"] == images.PACKAGE_VERSION
  for flavor, extra in images.EXTRA.items():
    if extra:
      assert extra in project["optional-dependencies"], flavor


@pytest.mark.parametrize("module", [f"components.{s}" for s in STEPS] +
                         ["pipelines.local", "pipelines.compile", "pipelines.submit"])
def test_entry_point_answers_help(module):
  result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "usage:" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("flavor", images.FLAVORS)
def test_image_dependency_set_resolves(flavor, tmp_path):
  """`uv pip install --dry-run` of the package with the image's extra into an empty Python 3.11 venv."""
  uv = shutil.which("uv")
  if uv is None:
    pytest.skip("uv is not installed (scripts/setup.sh installs it); cannot resolve the image's dependencies")
  venv = tmp_path / "venv"
  subprocess.run([uv, "venv", "-q", "-p", "3.11", str(venv)], check=True, timeout=120)
  extra = images.EXTRA[flavor]
  target = f"{REPO}[{extra}]" if extra else REPO
  result = subprocess.run([uv, "pip", "install", "--dry-run", "-p", str(venv / "bin" / "python"), target],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  plan = result.stdout + result.stderr
  for package in ("paligemma-pipelines", "jax", "kfp", "google-cloud-aiplatform"):
    assert re.search(rf"\+ {package}[= @]", plan), f"{package} missing from the {flavor} image's plan"
  for other_flavor, package in ACCELERATOR_PACKAGE.items():
    present = re.search(rf"\+ {package}==", plan) is not None
    assert present == (other_flavor == flavor), f"{package} in the {flavor} image: {present}"
