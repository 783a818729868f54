"""Where a step reads and writes a KFP artifact, whatever the scheme of the pipeline root.

    location(dataset)                    # in a component body: the path or URI to hand to the core
    location(model, gcs_direct=False)    # a core that reads local files only

- `gs://...` (Vertex AI, or KFP with a GCS root): the URI itself, for cores that do their own GCS I/O
  (download, convert, export: resumable uploads, generation-checked writes, no FUSE in the way); with
  `gcs_direct=False`, the `/gcs/...` path Vertex AI's FUSE mount gives (`artifact.path`).
- a local path (the KFP local runner): the path.
- any other scheme (`minio://`, `s3://`, `oci://`, the default root of a plain KFP cluster): the local path
  KFP provides for it (`artifact.path`: `/minio/...`, `/s3/...`), which the KFP launcher fills before the
  task (inputs) and uploads after it (outputs). Writing to the URI instead would create a local folder
  named `minio:`. A scheme KFP has no local path for is an error naming it.
"""
from __future__ import annotations


def location(artifact, *, gcs_direct: bool = True) -> str:
  """The path or URI the step's core should read or write for `artifact` (a `kfp.dsl.Artifact`)."""
  uri = artifact.uri or ""
  if uri.startswith("file://"):
    return uri[len("file://"):]
  if "://" not in uri or (uri.startswith("gs://") and gcs_direct):
    return uri
  path = artifact.path
  if not path or "://" in path:
    raise ValueError(f"artifact {artifact.name or ''} is at {uri}: KFP gives no local path for that scheme and "
                     "the steps write gs:// directly only; use a gs://, minio://, s3:// or local pipeline root")
  return path
