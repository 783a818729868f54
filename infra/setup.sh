#!/usr/bin/env bash
# Everything a Vertex AI run needs in a Google Cloud project: APIs, a bucket, an Artifact Registry
# repository for the step images, and a service account with the roles the pipeline uses.
# Idempotent: re-running skips what exists.
#
#   infra/setup.sh PROJECT [REGION]            (BUCKET=gs://NAME to choose the bucket)
set -euo pipefail
PROJECT=${1:?usage: infra/setup.sh PROJECT [REGION]}
REGION=${2:-us-central1}
BUCKET=${BUCKET:-gs://${PROJECT}-paligemma}
REPOSITORY=paligemma                      # pipelines/images.py default_registry() expects this name
SA_NAME=paligemma-pipelines
SA="${SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
gc() { gcloud --project "$PROJECT" --quiet "$@"; }

echo "== APIs"
gc services enable aiplatform.googleapis.com artifactregistry.googleapis.com storage.googleapis.com \
  compute.googleapis.com iam.googleapis.com cloudbuild.googleapis.com

echo "== bucket $BUCKET (pipeline root, datasets, exported models and the champion record)"
gc storage buckets describe "$BUCKET" >/dev/null 2>&1 \
  || gc storage buckets create "$BUCKET" --location "$REGION" --uniform-bucket-level-access

echo "== Artifact Registry repository $REGION/$REPOSITORY (step images)"
gc artifacts repositories describe "$REPOSITORY" --location "$REGION" >/dev/null 2>&1 \
  || gc artifacts repositories create "$REPOSITORY" --repository-format docker --location "$REGION" \
       --description "paligemma-pipelines step images"

echo "== service account $SA"
gc iam service-accounts describe "$SA" >/dev/null 2>&1 \
  || gc iam service-accounts create "$SA_NAME" --display-name "PaliGemma pipelines"
# Run pipelines and custom jobs, write logs, pull images.
for role in roles/aiplatform.user roles/logging.logWriter roles/artifactregistry.reader; do
  gc projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" --role "$role" --condition None >/dev/null
done
# Read datasets and weights, write artifacts, models and the champion record: this bucket only.
gcloud storage buckets add-iam-policy-binding "$BUCKET" --member "serviceAccount:$SA" \
  --role roles/storage.objectAdmin >/dev/null
# The pipeline starts custom jobs (finetune, evaluate) that run as this same account.
gc iam service-accounts add-iam-policy-binding "$SA" --member "serviceAccount:$SA" \
  --role roles/iam.serviceAccountUser >/dev/null

cat <<DONE

Ready. Next:
  infra/build_images.sh ${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}
  python -m pipelines.submit --target vertex-tpu-v5e-4 --project $PROJECT --region $REGION \\
      --pipeline-root $BUCKET/pipeline-root --service-account $SA \\
      --param dataset_uri=$BUCKET/labelled/ --param dataset_format=coco --param export_uri=$BUCKET/models
DONE
