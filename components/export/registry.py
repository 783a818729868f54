"""The Vertex AI Model Registry upload of an export: the `aiplatform.Model.upload` arguments, then the call.

The request holds names, URIs and labels only. Credentials come from the environment (application-default
credentials) inside the client library and are never part of the request, the logs or the dry run.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Mapping

log = logging.getLogger(__name__)

# Vertex AI's prebuilt Hugging Face PyTorch inference container; it serves the transformers directory at
# the model's artifact URI. Pin your own with --serving-container.
HF_SERVING_CONTAINER = ("us-docker.pkg.dev/deeplearning-platform-release/gcr.io/"
                        "huggingface-pytorch-inference-cu121.2-2.transformers.4-44.ubuntu2204.py311")
DEFAULT_LOCATION = "us-central1"


def label_value(value: str) -> str:
  """Vertex AI label rules: lowercase letters, digits, `_` and `-`, at most 63 characters."""
  return re.sub(r"[^a-z0-9_-]", "-", str(value).lower())[:63]


def parse_labels(text: str) -> dict:
  """"team=vision,run=7" -> {"team": "vision", "run": "7"}."""
  labels = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"label {item!r} is not KEY=VALUE")
    labels[key] = value
  return labels


def upload_request(*, artifact_uri: str, export_format: str, display_name: str, serving_container: str | None,
                   labels: Mapping[str, str], description: str = "", project: str | None = None,
                   location: str | None = None) -> dict:
  """Keyword arguments of `google.cloud.aiplatform.Model.upload` for an exported model."""
  if serving_container is None:
    if export_format != "hf":
      raise ValueError("registering a big_vision .npz needs --serving-container (a container that serves it); "
                       "transformers exports default to Vertex AI's Hugging Face inference container")
    serving_container = HF_SERVING_CONTAINER
  return {
      "display_name": display_name,
      "artifact_uri": artifact_uri,
      "serving_container_image_uri": serving_container,
      "description": description,
      "labels": {label_value(k): label_value(v) for k, v in labels.items()},
      "project": project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None,
      "location": location or os.environ.get("GOOGLE_CLOUD_REGION") or DEFAULT_LOCATION,
  }


def register(request: dict, *, dry_run: bool) -> str:
  """Prints the request (dry run) or uploads it; returns what was printed or the new model's resource name."""
  if dry_run:
    if request["project"] is None:
      log.warning("the request names no project (\"project\": null): give --project or set GOOGLE_CLOUD_PROJECT; "
                  "otherwise the upload goes to the default project of your credentials")
    text = json.dumps({"method": "google.cloud.aiplatform.Model.upload", "kwargs": request}, indent=2,
                      sort_keys=True)
    print(text, flush=True)
    return text
  if not request["artifact_uri"].startswith("gs://"):
    raise ValueError(f"Vertex AI Model Registry reads models from gs:// only; {request['artifact_uri']} is not. "
                     "Export to a gs:// --output to register it")
  from google.cloud import aiplatform  # imported here: slow, and only a real upload needs it

  model = aiplatform.Model.upload(**request)
  return model.resource_name
