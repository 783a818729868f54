"""Compile the pipeline for a target into a KFP YAML package.

  python -m pipelines.compile --target vertex-tpu-v5e-8 --project P --region us-central1 --output pipeline.yaml
  python -m pipelines.compile --target kfp-gke-tpu-v5e-4 --image-registry REGISTRY --output pipeline.yaml
  python -m pipelines.compile --list

The YAML runs with `kfp run create -f pipeline.yaml`, in the Vertex AI console, or through
`python -m pipelines.submit`. Step images are REGISTRY/paligemma-pipelines-{cpu,gpu,tpu}:VERSION
(see images/ and infra/).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from components.common import cli
from components.common.atomic import write_atomic
from pipelines import images
from pipelines.targets import TARGETS, Target, get_target

PROG = "python -m pipelines.compile"


def registry_for(image_registry: str | None, project: str | None, region: str | None) -> str:
  if image_registry:
    return image_registry
  if project and region:
    return images.default_registry(project, region)
  return images.LOCAL_REGISTRY


def placeholder_image_warning(target: Target, registry: str) -> str | None:
  """The warning for a cloud pipeline whose steps name the placeholder registry (no --image-registry, no
  --project): no cluster can pull that image. None when the registry is a real one, or for the local target."""
  if target.platform == "local" or registry != images.LOCAL_REGISTRY:
    return None
  return (f"no --image-registry (or --project) given: the YAML names the placeholder image "
          f"{images.image_uri(target.image_flavor, registry)}, which no cluster can pull; push the step images "
          "(images/, infra/) and give --image-registry REGISTRY")


def compile_pipeline(target_name: str, output: str, registry: str = images.LOCAL_REGISTRY) -> str:
  """Writes the target's pipeline YAML to `output` (atomically) and returns the path."""
  from kfp import compiler  # here, not at the top: `--help` and the argument checks stay fast

  from pipelines.dag import build_pipeline

  pipeline = build_pipeline(get_target(target_name), registry)
  with tempfile.TemporaryDirectory() as scratch:  # the compiler writes a file; publish it in one rename
    package = os.path.join(scratch, "pipeline.yaml")
    compiler.Compiler().compile(pipeline, package)
    with open(package, "rb") as f:
      text = f.read()
  write_atomic(output, lambda f: f.write(text))
  return output


def load_documents(path: str) -> tuple[dict, dict | None]:
  """A compiled package: the PipelineSpec, and the platform spec (kfp-kubernetes settings) if any."""
  import yaml

  with open(path) as f:
    documents = [d for d in yaml.safe_load_all(f) if d]
  return documents[0], (documents[1] if len(documents) > 1 else None)


def _target(name: str) -> str:
  try:
    get_target(name)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
  return name


def add_target_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--target", required=True, type=_target, help=f"where it runs: {', '.join(TARGETS)}")
  p.add_argument("--image-registry", help="registry holding the step images (default: the Artifact "
                 "Registry repository infra/ creates, from --project/--region)")


def main(argv=None) -> int:
  if argv is None:
    argv = sys.argv[1:]
  if "--list" in argv:
    for target in TARGETS.values():
      print(f"{target.name:22s} {target.description}")
    return 0
  p = cli.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_target_arguments(p)
  p.add_argument("--project", help="Google Cloud project (names the image registry)")
  p.add_argument("--region", default="us-central1", help="region of the image registry (default us-central1)")
  p.add_argument("--output", default="pipeline.yaml", help="the YAML to write (default pipeline.yaml)")
  p.add_argument("--list", action="store_true", help="list the targets and exit")
  args = p.parse_args(argv)
  registry = registry_for(args.image_registry, args.project, args.region)
  if warning := placeholder_image_warning(get_target(args.target), registry):
    print(f"{PROG}: warning: {warning}", file=sys.stderr)
  path = compile_pipeline(args.target, args.output, registry)
  print(f"compiled {args.target} -> {path} (images {images.image_uri(get_target(args.target).image_flavor, registry)})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
