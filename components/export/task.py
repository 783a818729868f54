"""What a KFP task of the export step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.
"""
import json


def run_export(checkpoint_uri: str, export_format: str, output_uri: str, dtype: str = "", which: str = "latest",
               metrics_uri: str = "", register: bool = False, dry_run: bool = False, display_name: str = "",
               serving_container: str = "", labels: str = "", project: str = "", location: str = "") -> str:
  """Runs the export with KFP-friendly scalar arguments ("" = default); returns the manifest as JSON."""
  from components.export.core import ExportConfig, export
  from components.export.registry import parse_labels

  manifest = export(ExportConfig(
      checkpoint=checkpoint_uri, format=export_format, output=output_uri, dtype=dtype or None, which=which,
      metrics=metrics_uri or None, register=register, dry_run=dry_run, display_name=display_name or None,
      serving_container=serving_container or None, labels=parse_labels(labels), project=project or None,
      location=location or None))
  return json.dumps(manifest)


def export_location(export_uri: str, run_id: str, fallback: str) -> str:
  """Exported models live at EXPORT_URI/RUN_ID; with no export URI, at `fallback` (the step's own artifact)."""
  if not export_uri:
    return fallback
  if not run_id:
    raise ValueError(f"export_uri {export_uri!r} needs a run_id: exports land in EXPORT_URI/RUN_ID (the pipeline "
                     "passes its run name)")
  return f"{export_uri.rstrip('/')}/{run_id}"
