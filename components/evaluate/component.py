"""The evaluate step as a KFP component: a typed signature whose body calls the same core as the CLI.

`evaluate_model` decodes the dataset split with the model, writes the evaluation directory to its
`evaluation` artifact, logs every number of metrics.json to the `metrics` artifact (nested keys joined
with '/', e.g. `per_class/cat/ap`) so Vertex AI Pipelines shows and compares them, and copies the report
to the `report` HTML artifact, which the Vertex AI console renders.
(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""
from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import image_uri


def _evaluate_model(model: Input[Model], dataset: Input[Dataset], task: str, evaluation: Output[Artifact],
                    metrics: Output[Metrics], report: Output[HTML], split: str = "valid", sampler: str = "greedy",
                    max_decode_len: int = 0, limit: int = 0, batch_size: int = 8,
                    baseline: Input[Artifact] = None, which: str = "latest", prompt_len: int = 0, seed: int = 0,
                    run_id: str = "", vqvae: str = ""):
  """Decodes a split with the model (a model directory, a finetune workdir or an .npz), scores it by task, and
  publishes metrics.json as KFP Metrics and report.html as an HTML artifact (base vs tuned with a baseline).
  `which` (latest, best or a step) picks a workdir's checkpoint; `prompt_len` 0 = the split's longest prompt;
  `seed` seeds nucleus/temperature sampling; `run_id` is shown in the report's header; `vqvae` (task segment)
  overrides the mask codec the model's model.json names."""
  import os
  import shutil

  from components.common.artifacts import location
  from components.evaluate.task import run_evaluate, scalar_metrics  # nested keys joined with "/", None left out

  local = {"gcs_direct": False}  # evaluate reads and writes local files (the FUSE mount on Vertex AI)
  values = scalar_metrics(run_evaluate(location(model, **local), location(dataset, **local), task,
                                       location(evaluation, **local), split=split, sampler=sampler,
                                       max_decode_len=max_decode_len, limit=limit, batch_size=batch_size,
                                       baseline_dir=location(baseline, **local) if baseline else "",
                                       which=which, prompt_len=prompt_len, seed=seed, run_id=run_id,
                                       vqvae=vqvae))
  for name, value in values.items():
    metrics.log_metric(name, value)
  evaluation.metadata.update({"task": task, "split": split, **{k: v for k, v in values.items() if "/" not in k}})
  shutil.copyfile(os.path.join(location(evaluation, **local), "report.html"), location(report, **local))


def make(image: str):
  """This step's component running in container `image` (the pipeline binds it to its target's image)."""
  return dsl.component(_evaluate_model, base_image=image, install_kfp_package=False)


evaluate_model = make(image_uri("cpu"))
