"""The container images the pipeline's steps run in, pinned to this package's version.

`images/Dockerfile.{cpu,gpu,tpu}` build them; `infra/` creates the Artifact Registry repository they are
pushed to. A compiled pipeline names `REGISTRY/paligemma-pipelines-FLAVOR:VERSION`, so a pipeline compiled
by version X always runs the steps of version X. Each step's `component.py` names its default image from
here; the pipeline (`pipelines.steps`) rebinds the steps to its target's image.
"""
from __future__ import annotations

from components import __version__

PACKAGE = "paligemma-pipelines"
PACKAGE_VERSION = __version__  # not importlib.metadata: a checkout that is not pip-installed works too
FLAVORS = ("cpu", "gpu", "tpu")
# The accelerator extra of each image (pyproject.toml [project.optional-dependencies]); the CPU image has none.
EXTRA = {"cpu": "", "gpu": "gpu", "tpu": "tpu"}
# What every image installs besides: whatever a pipeline parameter may ask of a step works in it
# (export_format hf, task caption, dataset_format hf).
STEP_EXTRAS = ("hf", "hf-data", "caption")


def image_extras(flavor: str) -> str:
  """The extras `images/Dockerfile.FLAVOR` installs, as pip writes them: `tpu,hf,hf-data,caption`."""
  return ",".join(([EXTRA[flavor]] if EXTRA[flavor] else []) + list(STEP_EXTRAS))
# Where `docker build` tags land when no registry is given (local builds, KFP clusters pulling from a mirror).
LOCAL_REGISTRY = "paligemma"


def default_registry(project: str, region: str) -> str:
  """The Artifact Registry repository `infra/setup.sh` creates."""
  return f"{region}-docker.pkg.dev/{project}/paligemma"


def image_uri(flavor: str, registry: str = LOCAL_REGISTRY) -> str:
  if flavor not in FLAVORS:
    raise ValueError(f"unknown image flavor {flavor!r}; choose one of {FLAVORS}")
  return f"{registry.rstrip('/')}/{PACKAGE}-{flavor}:{PACKAGE_VERSION}"
