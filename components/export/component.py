"""The export step as a KFP component: a typed signature whose body calls the same core as the CLI.

`export_model` reads the fine-tuned model artifact (a finetune workdir or a model directory, or the .npz
`checkpoint_file` inside it) and writes the export to its `exported` output artifact (gs:// on Vertex AI, so that
`register` can hand that URI to the Model Registry), recording format and manifest in the metadata.
(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.common.images import image_uri


def _export_model(model: Input[Model], export_format: str, exported: Output[Model], checkpoint_file: str = "",
                  dtype: str = "", which: str = "latest", register: bool = False, dry_run: bool = False,
                  display_name: str = "", serving_container: str = "", labels: str = "",
                  evaluation: Input[Artifact] = None, project: str = "", location: str = "",
                  export_uri: str = "", run_id: str = "") -> str:
  """A finetune workdir or a model directory (or `checkpoint_file`, an .npz inside one) -> npz or hf export.
  `evaluation`: an evaluate step's evaluation directory, whose metrics.json the manifest records.
  `project`/`location`: where to register ("" = the environment's); names only, credentials come from the
  environment (application-default credentials), never from parameters.
  `export_uri`: export to EXPORT_URI/RUN_ID (the pipeline's models, beside the champion record) instead of
  into the `exported` artifact; either way the artifact's metadata `uri` says where the export is."""
  import json

  from components.common.artifacts import location
  from components.export.task import export_location, run_export

  model_dir = location(model, gcs_direct=False)
  checkpoint = f"{model_dir.rstrip('/')}/{checkpoint_file}" if checkpoint_file else model_dir
  metrics_uri = f"{location(evaluation, gcs_direct=False).rstrip('/')}/metrics.json" if evaluation else ""
  output = export_location(export_uri, run_id, location(exported))
  manifest = run_export(checkpoint, export_format, output, dtype=dtype, which=which, metrics_uri=metrics_uri,
                        register=register, dry_run=dry_run, display_name=display_name,
                        serving_container=serving_container, labels=labels, project=project, location=location)
  summary = json.loads(manifest)
  where = output if export_uri else exported.uri  # the artifact's URI, not the local path a minio:// root gives
  exported.metadata.update({"uri": where, "format": export_format, "dtype": summary["dtype"],
                            "files": len(summary["files"]), "package_version": summary["package"]["version"]})
  return manifest


def make(image: str):
  """This step's component running in container `image` (the pipeline binds it to its target's image)."""
  return dsl.component(_export_model, base_image=image, install_kfp_package=False)


export_model = make(image_uri("cpu"))
