#!/usr/bin/env bash
# Builds and pushes the step images REGISTRY/paligemma-pipelines-{cpu,gpu,tpu}:VERSION (VERSION = the
# package version, components.__version__, the tag compiled pipelines pin).
#
#   infra/build_images.sh REGISTRY [cpu gpu tpu]       docker on this machine
#   CLOUD_BUILD=1 infra/build_images.sh REGISTRY ...   Cloud Build (no local docker needed)
set -euo pipefail
REGISTRY=${1:?usage: infra/build_images.sh REGISTRY [FLAVOR ...]}
shift
[ $# -gt 0 ] || set -- cpu gpu tpu
cd "$(dirname "$0")/.."
VERSION=$(PYTHONPATH=. python3 -c 'import components; print(components.__version__)')  # imports nothing else

# A clean build context: the package sources only (no virtualenvs, caches or run outputs).
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp -r pyproject.toml README.md constraints.txt components pipelines images "$context/"
find "$context" -name __pycache__ -prune -exec rm -rf {} +

case "$REGISTRY" in *-docker.pkg.dev/*) gcloud auth configure-docker "${REGISTRY%%/*}" --quiet ;; esac
for flavor in "$@"; do
  image="$REGISTRY/paligemma-pipelines-$flavor:$VERSION"
  echo "== $image"
  if [ -n "${CLOUD_BUILD:-}" ]; then
    cp "images/Dockerfile.$flavor" "$context/Dockerfile"
    gcloud builds submit "$context" --tag "$image"
  else
    docker build -f "$context/images/Dockerfile.$flavor" -t "$image" "$context"
    docker push "$image"
  fi
done
