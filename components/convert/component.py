"""The convert step as a KFP component: a typed signature whose body calls the same core as the CLI.

`convert_dataset` writes the dataset directory to its `dataset` output artifact (gs:// directly on Vertex
AI, the local path KFP uploads for minio:// or s3:// roots, a local folder on the local runner:
`components.common.artifacts.location`), so the finetune and evaluate steps receive it with lineage.
`source_fingerprint` is not read by the conversion: the pipeline passes the fingerprint of the input's current
listing (pipelines/listing.py), which makes it part of this task's cache key — a run whose files changed is
never served a conversion cached from before they changed.
(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.images import image_uri


def _convert_dataset(input_uri: str, data_format: str, task: str, dataset: Output[Dataset], classes: str = "",
                     splits: str = "train=0.8,valid=0.1,test=0.1", seed: int = 0, strict: bool = False,
                     workers: int = 0, max_side: int = 0, tokenizer_uri: str = "", text_len: int = 128,
                     source_fingerprint: str = "", vqvae: str = "") -> str:
  """Labelled images (paligemma-jsonl, coco, yolo, voc, hf, csv, mask-png) -> a PaliGemma dataset directory.
  `vqvae` (task segment): the mask codec .npz, or a model directory whose model.json names one."""
  import json

  from components.common.artifacts import location
  from components.convert.task import run_convert

  report = run_convert(input_uri, data_format, task, location(dataset), classes=classes, splits=splits, seed=seed,
                       strict=strict, workers=workers, max_side=max_side, tokenizer_uri=tokenizer_uri,
                       text_len=text_len, vqvae=vqvae)
  summary = json.loads(report)
  dataset.metadata.update({"source": input_uri, "format": data_format, "task": task, "counts": summary["counts"],
                           "rejected": len(summary["rejected"]), "repaired": len(summary["repaired"]),
                           "split_fingerprints": summary["split_fingerprints"], "source_fingerprint": source_fingerprint})
  return report


def make(image: str):
  """This step's component running in container `image` (the pipeline binds it to its target's image)."""
  return dsl.component(_convert_dataset, base_image=image, install_kfp_package=False)


convert_dataset = make(image_uri("cpu"))
