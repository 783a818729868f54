"""The finetune step as a KFP component: a typed signature whose body calls the same core as the CLI.

`finetune_model` reads a model directory (components.download) and a dataset directory
(components.convert) as input artifacts and writes the finetune workdir to its `tuned_model` output
artifact, so evaluate and export receive it with lineage. A retried task (preemption) finds its own
checkpoints in the same output URI and resumes.
(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""
from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.common.images import image_uri


def _finetune_model(base_model: Input[Model], dataset: Input[Dataset], tuned_model: Output[Model],
                    train_metrics: Output[Metrics], config: str = "notebook_attention_sgd",
                    overrides: list = [],  # noqa: B006 (KFP reads the default; never mutated)
                    trainable: Optional[str] = None, total_steps: Optional[int] = None,
                    epochs: Optional[float] = None, batch_size: Optional[int] = None, lr: Optional[float] = None,
                    text_len: Optional[int] = None, seed: Optional[int] = None) -> str:
  """PaliGemma fine-tuning -> a workdir (config.json, model.json, tokenizer.model, checkpoints/, metrics).
  `config`: a shipped config's name or a .py path. `trainable` (a preset or regexes), `total_steps`, `epochs`,
  `batch_size`, `lr` (optimizer.lr), `text_len` and `seed` set those config keys; None keeps the config's value
  (`total_steps` and `epochs` replace each other). `overrides`: any other `KEY=VALUE` config settings; a key
  given twice (e.g. `lr` and `optimizer.lr=...`) is an error. The base model's model.json names the model."""
  import json

  from components.common.artifacts import location
  from components.finetune.task import run_finetune

  # The trainer's files go through the FUSE mount on Vertex AI (gcs_direct=False), as its data reading does.
  result = run_finetune(config, location(tuned_model, gcs_direct=False), location(dataset, gcs_direct=False),
                        location(base_model, gcs_direct=False), tuple(overrides),
                        trainable=trainable, total_steps=total_steps, epochs=epochs, batch_size=batch_size,
                        lr=lr, text_len=text_len, seed=seed)
  for name in ("loss", "val_loss"):
    if result.get(name) is not None:
      train_metrics.log_metric(name, float(result[name]))
  tuned_model.metadata.update({"name": result["model_name"], "config": config, "step": result["step"],
                               "status": result["status"]})
  if result["status"] != "done":
    raise RuntimeError(f"finetune stopped early ({result['status']}) at step {result['step']}; "
                       "retry the task to resume from its checkpoint")
  return json.dumps(result)


def make(image: str):
  """This step's component running in container `image` (the pipeline binds it to its target's image)."""
  return dsl.component(_finetune_model, base_image=image, install_kfp_package=False)


finetune_model = make(image_uri("tpu"))
