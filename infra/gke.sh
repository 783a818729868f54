#!/usr/bin/env bash
# Optional: a GKE cluster with a Cloud TPU node pool and Kubeflow Pipelines, for the kfp-gke-tpu-* targets.
# Run infra/setup.sh first (bucket, images, service account).
#
#   infra/gke.sh PROJECT ZONE [TPU_TARGET]       e.g. infra/gke.sh acme-ml us-west4-a v5e-4
#
# Credentials for downloads from Kaggle / the Hugging Face hub are read from this shell's environment
# (KAGGLE_USERNAME, KAGGLE_KEY, HF_TOKEN) into the Kubernetes secret the pipeline's download step mounts;
# they never appear in a command line, a pipeline parameter or a compiled pipeline.
set -euo pipefail
PROJECT=${1:?usage: infra/gke.sh PROJECT ZONE [TPU_TARGET]}
ZONE=${2:?usage: infra/gke.sh PROJECT ZONE [TPU_TARGET]}
TPU=${3:-v5e-4}
CLUSTER=${CLUSTER:-paligemma-kfp}
KFP_VERSION=${KFP_VERSION:-2.5.0}        # a Kubeflow Pipelines 2.x release (manifests tag)
SA="paligemma-pipelines@${PROJECT}.iam.gserviceaccount.com"
gc() { gcloud --project "$PROJECT" --quiet "$@"; }

# Machine type and topology per single-host TPU slice (pipelines/targets.py, kfp-gke-tpu-*).
case "$TPU" in
  v5e-1) MACHINE=ct5lp-hightpu-1t TOPOLOGY=1x1 ;;
  v5e-4) MACHINE=ct5lp-hightpu-4t TOPOLOGY=2x2 ;;
  v5e-8) MACHINE=ct5lp-hightpu-8t TOPOLOGY=2x4 ;;
  v6e-4) MACHINE=ct6e-standard-4t TOPOLOGY=2x2 ;;
  v6e-8) MACHINE=ct6e-standard-8t TOPOLOGY=2x4 ;;
  v5p-8) MACHINE=ct5p-hightpu-4t TOPOLOGY=2x2x1 ;;
  v4-8)  MACHINE=ct4p-hightpu-4t TOPOLOGY=2x2x1 ;;
  *) echo "unknown TPU $TPU (v5e-1 v5e-4 v5e-8 v6e-4 v6e-8 v5p-8 v4-8)" >&2; exit 2 ;;
esac

echo "== cluster $CLUSTER ($ZONE) with Workload Identity"
gc services enable container.googleapis.com
gc container clusters describe "$CLUSTER" --zone "$ZONE" >/dev/null 2>&1 \
  || gc container clusters create "$CLUSTER" --zone "$ZONE" --machine-type e2-standard-8 --num-nodes 2 \
       --workload-pool "${PROJECT}.svc.id.goog"
echo "== TPU node pool tpu-$TPU ($MACHINE, $TOPOLOGY); scales to zero when idle"
gc container node-pools describe "tpu-$TPU" --cluster "$CLUSTER" --zone "$ZONE" >/dev/null 2>&1 \
  || gc container node-pools create "tpu-$TPU" --cluster "$CLUSTER" --zone "$ZONE" \
       --machine-type "$MACHINE" --tpu-topology "$TOPOLOGY" --num-nodes 0 \
       --enable-autoscaling --min-nodes 0 --max-nodes 1
gc container clusters get-credentials "$CLUSTER" --zone "$ZONE"

echo "== Kubeflow Pipelines $KFP_VERSION"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"

echo "== pipeline pods act as $SA (GCS, Artifact Registry) through Workload Identity"
gc iam service-accounts add-iam-policy-binding "$SA" --role roles/iam.workloadIdentityUser \
  --member "serviceAccount:${PROJECT}.svc.id.goog[kubeflow/pipeline-runner]" >/dev/null
kubectl annotate serviceaccount pipeline-runner -n kubeflow --overwrite "iam.gke.io/gcp-service-account=$SA"

echo "== secret paligemma-credentials (from KAGGLE_USERNAME / KAGGLE_KEY / HF_TOKEN if set)"
secrets=$(mktemp -d)   # values go through files, never through a command line
trap 'rm -rf "$secrets"' EXIT
args=()
for name in KAGGLE_USERNAME KAGGLE_KEY HF_TOKEN; do
  if [ -n "${!name:-}" ]; then
    printf '%s' "${!name}" > "$secrets/$name"; args+=("--from-file=$name=$secrets/$name")
  fi
done
if [ ${#args[@]} -gt 0 ]; then
  kubectl create secret generic paligemma-credentials -n kubeflow "${args[@]}" --dry-run=client -o yaml \
    | kubectl apply -f - >/dev/null
fi

cat <<DONE

Ready. Open the UI:  kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80
Submit:  python -m pipelines.submit --target kfp-gke-tpu-$TPU --kfp-host http://localhost:8080 \\
           --image-registry REGISTRY --pipeline-root gs://BUCKET/pipeline-root --param dataset_uri=gs://BUCKET/labelled/
DONE
