"""The download step as a KFP component: a typed signature whose body calls the same core as the CLI.

`download_model_dir` writes the model directory to its `model_dir` output artifact (gs:// directly on
Vertex AI, the local path KFP uploads for minio:// or s3:// roots, a local folder on the local runner:
`components.common.artifacts.location`), so finetune, evaluate and export receive it with lineage.
Credentials are no parameter: the pod gets them as environment variables (KAGGLE_USERNAME/KAGGLE_KEY,
KAGGLE_API_TOKEN, HF_TOKEN) or as a mounted secret file whose *path* may be passed, and the workload
identity's application-default credentials serve GCS.
(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""

from kfp import dsl
from kfp.dsl import Model, Output

from components.common.images import image_uri


def _download_model_dir(model: str, model_dir: Output[Model], source: str = "", tokenizer: str = "",
                        dtype: str = "bfloat16", kaggle_credentials_path: str = "", hf_credentials_path: str = "",
                        task: str = "", vqvae: str = ""):
  """PaliGemma weights + tokenizer from Kaggle, GCS, the HF hub or a path -> a model directory. With `task`
  segment (or a `vqvae` URI) the mask codec too: `vqvae`, default the released vae-oid.npz."""
  from components.common.artifacts import location
  from components.download.task import run_download

  model_json = run_download(model, location(model_dir), source=source, tokenizer=tokenizer, dtype=dtype,
                            kaggle_credentials_path=kaggle_credentials_path, hf_credentials_path=hf_credentials_path,
                            task=task, vqvae=vqvae)
  model_dir.metadata.update({"name": model_json["name"], "checkpoint": model_json["checkpoint"],
                             "source": source or model,
                             **({"vqvae": model_json["vqvae"]} if model_json.get("vqvae") else {})})


def make(image: str):
  """This step's component running in container `image` (the pipeline binds it to its target's image)."""
  return dsl.component(_download_model_dir, base_image=image, install_kfp_package=False)


download_model_dir = make(image_uri("cpu"))
