"""What a KFP task of the download step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.
"""
import json


def run_download(model: str, output_uri: str, source: str = "", tokenizer: str = "", dtype: str = "bfloat16",
                 kaggle_credentials_path: str = "", hf_credentials_path: str = "", task: str = "",
                 vqvae: str = "") -> dict:
  """Runs the download with KFP-friendly scalar arguments ("" = default); returns the model.json.

  The mask codec comes too when `vqvae` names one, or when `task` is `segment` (then `vqvae` "" means the
  released `gs://big_vision/paligemma/vae-oid.npz`)."""
  import os

  from components.download import download_model, secrets
  from components.download.sources import DEFAULT_VQVAE

  secrets.configure_logging()
  download_model(model, output_uri, source or None, tokenizer or None, dtype,
                 kaggle_credentials=kaggle_credentials_path or None, hf_credentials=hf_credentials_path or None,
                 vqvae=vqvae or (DEFAULT_VQVAE if task == "segment" else None))
  if output_uri.startswith("gs://"):
    from components.download import gcs

    return json.loads(gcs.read_text(f"{output_uri.rstrip('/')}/model.json", gcs.client()))
  with open(os.path.join(output_uri, "model.json")) as f:
    return json.load(f)
