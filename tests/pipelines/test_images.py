"""Step images: each Dockerfile installs the package with its flavor's extras at the tested versions
(constraints.txt), that dependency set resolves, and every entry point the components call starts (`--help`)."""
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
def test_dockerfile_installs_the_package_with_its_extras_at_the_tested_versions(flavor):
  text = dockerfile(flavor)
  install = re.search(r'pip install -c /tmp/src/constraints.txt "/tmp/src\[([a-z,-]+)\]"', text)
  assert install, f"images/Dockerfile.{flavor} does not pip install the package with constraints.txt"
  assert install.group(1) == images.image_extras(flavor)
  assert images.image_extras(flavor).split(",")[:1] == ([images.EXTRA[flavor]] if images.EXTRA[flavor] else ["hf"])
  assert "COPY pyproject.toml README.md constraints.txt /tmp/src/" in text
  assert f"paligemma-pipelines-{flavor}:VERSION" in text  # the tag infra/build_images.sh gives it
  for step in STEPS:
    assert step in text  # the build fails early if an entry point cannot start


def test_extras_exist_in_pyproject():
  import tomllib

  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  assert project["dynamic"] == ["version"]  # components.__version__, the one place it is written
  for flavor in images.FLAVORS:
    for extra in images.image_extras(flavor).split(","):
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
  target = f"{REPO}[{images.image_extras(flavor)}]"
  result = subprocess.run([uv, "pip", "install", "--dry-run", "-p", str(venv / "bin" / "python"), "-c",
                           os.path.join(REPO, "constraints.txt"), target], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  plan = result.stdout + result.stderr
  for package in ("paligemma-pipelines", "jax", "kfp", "google-cloud-aiplatform", "transformers"):
    assert re.search(rf"\+ {package}[= @]", plan), f"{package} missing from the {flavor} image's plan"
  for other_flavor, package in ACCELERATOR_PACKAGE.items():
    present = re.search(rf"\+ {package}==", plan) is not None
    assert present == (other_flavor == flavor), f"{package} in the {flavor} image: {present}"
