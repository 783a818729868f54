"""The pipeline's KFP components, bound to a target's container image by `make_components(image)`.

Typed signatures whose bodies build a step's command line and run it (`python -m components.<step>`,
docs/ARCHITECTURE.md), so a step behaves the same in the pipeline as from a terminal; gate and promote
are the pipeline's own (`pipelines.gate`, `pipelines.champion`). Each body is shipped to the container as
source (KFP lightweight components), so it imports what it needs inside.

(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""
import types
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def download(model: str, source: str, tokenizer: str, dtype: str, model_dir: Output[Model]):
  """Weights + tokenizer from Kaggle, GCS, the HF hub or a path -> a model directory. Credentials come
  from the environment (a mounted secret), never from parameters."""
  import json
  import os

  from pipelines import runtime

  args = ["--model", model, "--output", model_dir.path]
  for flag, value in (("--source", source), ("--tokenizer", tokenizer), ("--dtype", dtype)):
    if value:
      args += [flag, value]
  runtime.run_step("download", args)
  with open(os.path.join(model_dir.path, "model.json")) as f:
    model_json = json.load(f)
  model_dir.metadata.update({"name": model_json["name"], "checkpoint": model_json["checkpoint"],
                             "source": source or model})


def convert(dataset_uri: str, dataset_format: str, task: str, classes: str, splits: str, seed: int,
            dataset: Output[Dataset]):
  """Labelled images in any supported format -> a dataset directory (jsonl, images, records, report)."""
  import json
  import os

  from pipelines import runtime

  args = ["--input", dataset_uri, "--format", dataset_format, "--task", task, "--output", dataset.path,
          "--seed", seed, "--no-progress"]
  if classes:
    args += ["--classes", classes]
  if splits:
    args += ["--splits", splits]
  runtime.run_step("convert", args)
  with open(os.path.join(dataset.path, "report.json")) as f:
    report = json.load(f)
  dataset.metadata.update({"source": dataset_uri, "format": dataset_format, "task": task,
                           "counts": report.get("counts", {}), "rejected": len(report.get("rejected", []))})


def finetune(base_model: Input[Model], dataset: Input[Dataset], config: str, trainable: str,
             total_steps: int, epochs: float, batch_size: int, lr: float, text_len: int, overrides: list,
             tuned_model: Output[Model], train_metrics: Output[Metrics]):
  """The JAX trainer -> a finetune workdir (checkpoints, config.json, metrics.jsonl)."""
  import json
  import os

  from pipelines import runtime

  with open(os.path.join(base_model.path, "model.json")) as f:
    model_name = json.load(f)["name"]
  settings = {"data_dir": dataset.path, "checkpoint": base_model.path, "model_name": model_name}
  # 0 / "" leave the config file's value in place.
  for key, value in (("trainable", trainable), ("total_steps", total_steps), ("epochs", epochs),
                     ("batch_size", batch_size), ("optimizer.lr", lr), ("text_len", text_len)):
    if value:
      settings[key] = value
  args = ["--config", runtime.finetune_config_path(config), "--workdir", tuned_model.path]
  args += [f"--config.{key}={value}" for key, value in settings.items()]
  args += [f"--config.{override}" for override in overrides]
  runtime.run_step("finetune", args)
  last = runtime.last_train_metrics(tuned_model.path)
  for name, value in runtime.scalar_metrics(last).items():
    train_metrics.log_metric(name, value)
  tuned_model.metadata.update({"name": model_name, "config": config, **runtime.scalar_metrics(last)})


def evaluate(model: Input[Model], dataset: Input[Dataset], task: str, split: str, sampler: str,
             max_decode_len: int, limit: int, batch_size: int, evaluation: Output[Artifact],
             metrics: Output[Metrics], report: Output[HTML], baseline: Input[Artifact] = None):
  """Batched decoding + task metrics + HTML report; base vs tuned side by side when given a baseline."""
  import os
  import shutil

  from pipelines import runtime

  args = ["run", "--checkpoint", model.path, "--data", dataset.path, "--split", split, "--task", task,
          "--output", evaluation.path, "--batch-size", batch_size]
  for flag, value in (("--sampler", sampler), ("--max-decode-len", max_decode_len), ("--limit", limit)):
    if value:
      args += [flag, value]
  if baseline is not None:
    args += ["--baseline", baseline.path]
  runtime.run_step("evaluate", args)
  values = runtime.scalar_metrics(runtime.read_metrics(evaluation.path))
  for name, value in values.items():
    metrics.log_metric(name, value)
  evaluation.metadata.update({"task": task, "split": split, **values})
  shutil.copyfile(os.path.join(evaluation.path, "report.html"), report.path)


def gate(task: str, base_evaluation: Input[Artifact], tuned_evaluation: Input[Artifact], champion_uri: str,
         export_uri: str, min_metric: float, min_improvement: float, explanation: Output[Markdown],
         decision: Output[Artifact]) -> NamedTuple("GateOutputs", passed=bool, reason=str):
  """Promote only a tuned model that beats the champion (or the base model) on the task's headline metric."""
  import dataclasses
  import json

  from pipelines import champion, gate, runtime

  location = runtime.champion_location(champion_uri, export_uri)
  current = champion.read(location)
  result = gate.decide(task, runtime.read_metrics(tuned_evaluation.path),
                       runtime.read_metrics(base_evaluation.path), current,
                       min_metric=min_metric, min_improvement=min_improvement)
  print(f"[gate] {result.reason}", flush=True)
  with open(explanation.path, "w") as f:
    f.write(result.to_markdown(current))
  with open(decision.path, "w") as f:
    json.dump({**dataclasses.asdict(result), "champion_uri": location, "champion": current,
               "base_metrics": runtime.read_metrics(base_evaluation.path),
               "tuned_metrics": runtime.read_metrics(tuned_evaluation.path),
               "tuned_report": runtime.report_path(tuned_evaluation.path)}, f, indent=2)
  decision.metadata.update({"passed": result.passed, "metric": result.metric, "tuned": result.tuned})
  outputs = NamedTuple("GateOutputs", passed=bool, reason=str)
  return outputs(result.passed, result.reason)


def export(tuned_model: Input[Model], tuned_evaluation: Input[Artifact], export_uri: str, export_format: str,
           dtype: str, register: bool, run_id: str, exported: Output[Model]):
  """The promoted model as a big_vision .npz or a transformers checkpoint (+ Vertex AI Model Registry),
  at EXPORT_URI/RUN_ID beside the champion record (or in this artifact when no export_uri is given)."""
  import os

  from pipelines import runtime

  location = runtime.export_location(export_uri, run_id, exported.path)  # where this container writes
  args = ["--checkpoint", tuned_model.path, "--format", export_format, "--output", location,
          "--metrics", os.path.join(tuned_evaluation.path, "metrics.json")]
  if dtype:
    args += ["--dtype", dtype]
  if register:
    args += ["--register"]
  runtime.run_step("export", args)
  # The champion record names it by URI (gs://... on Vertex AI, where `path` is the /gcs/ mount).
  exported.metadata.update({"uri": runtime.export_location(export_uri, run_id, exported.uri),
                            "format": export_format})


def promote(exported: Input[Model], decision: Input[Artifact], champion_uri: str, export_uri: str,
            task: str, run_id: str, base_model: str, dataset_uri: str):
  """Records the exported model as the new champion, where the next (scheduled) run's gate reads it."""
  import json

  from pipelines import champion, runtime

  with open(decision.path) as f:
    result = json.load(f)
  location = runtime.champion_location(champion_uri, export_uri)
  if not location:
    print("[promote] no export_uri or champion_uri: the champion is not recorded", flush=True)
    return
  record = champion.new_record(model_uri=exported.metadata.get("uri", exported.uri), metric=result["metric"],
                               value=result["tuned"], task=task, run_id=run_id, base_model=base_model,
                               dataset=dataset_uri)
  champion.write(location, record)
  print(f"[promote] champion record written to {location}: {record['model_uri']}", flush=True)


STEPS = {"download": download, "convert": convert, "finetune": finetune, "evaluate": evaluate, "gate": gate,
         "export": export, "promote": promote}


def make_components(image: str) -> types.SimpleNamespace:
  """The steps as KFP components that run in `image` (which already holds this package and kfp)."""
  ops = {}
  for name, func in STEPS.items():
    ops[name] = dsl.component(func, base_image=image, install_kfp_package=False)
    ops[name].component_spec.name = name  # short task names in the DAG, whatever the function is called
  return types.SimpleNamespace(**ops)
