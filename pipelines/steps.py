"""The DAG's components, bound to a target's container image by `make_components(image)`.

download, convert, finetune, evaluate and export are the steps' own components
(`components/<step>/component.py`, the same ones a user compiles alone; their bodies call the step's core
in process, as its CLI does), rebuilt here for the target's image. fingerprint (the dataset listing's
fingerprint, `pipelines.listing`), champion (read the record), rescore (the champion on this run's split,
through the evaluate step's core), gate and promote are the pipeline's own (`pipelines.gate`,
`pipelines.champion`). Each body is shipped to the container as source (KFP
lightweight components), so it imports what it needs inside, and only modules that do not build
components: KFP's executor has a reduced `kfp.dsl` without `component`.

(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""
import types
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.convert import component as convert_component
from components.download import component as download_component
from components.evaluate import component as evaluate_component
from components.export import component as export_component
from components.finetune import component as finetune_component


def fingerprint_dataset(dataset_uri: str) -> str:
  """Lists the dataset prefix (names, sizes, generations) and returns its fingerprint; convert takes it as a
  parameter, so a changed prefix is a new cache key and convert re-reads it (pipelines/listing.py)."""
  from pipelines import listing

  return listing.fingerprint(dataset_uri)


def read_champion(task: str, champion_uri: str, export_uri: str,
                  rebaseline: bool) -> NamedTuple("ChampionOutputs", model_uri=str, champion=str):
  """Reads the champion record and its generation at the start of the run. `model_uri`: the champion's model,
  to re-score on this run's split ("" when there is none, or when re-baselining); `champion`: JSON of the
  record, where it lives and the generation promotion must still find. A record for another task/metric
  fails the run here, before any training, unless `rebaseline`."""
  import json

  from pipelines import champion as champion_lib, gate, runtime

  location = runtime.champion_location(champion_uri, export_uri)
  record, generation = champion_lib.read_versioned(location)
  model_uri = gate.model_to_rescore(record, task, rebaseline=rebaseline, location=location)
  if record is None:
    print(f"[champion] no champion at {location or '(no champion_uri/export_uri)'}: the base model is the "
          "reference", flush=True)
  else:
    print(f"[champion] {location} (generation {generation}): run {record['run_id']}, {record['metric']} "
          f"{record['value']}" + (" (re-baseline: not compared)" if rebaseline else f"; re-scoring {model_uri}"),
          flush=True)
  outputs = NamedTuple("ChampionOutputs", model_uri=str, champion=str)
  return outputs(model_uri, json.dumps({"location": location, "generation": generation, "record": record,
                                        "rebaseline": rebaseline}))


def rescore_champion(model_uri: str, dataset: Input[Dataset], task: str, evaluation: Output[Artifact],
                     metrics: Output[Metrics], report: Output[HTML], split: str = "valid", sampler: str = "greedy",
                     max_decode_len: int = 0, limit: int = 0, batch_size: int = 8):
  """Evaluates the champion's model (`model_uri`) on this run's split with the evaluate step's core and the
  same settings as the base and tuned models. Always records which split that is (`split.json`); with no
  champion (`model_uri` "") nothing else."""
  import os
  import shutil

  from components.evaluate.task import run_evaluate, scalar_metrics
  from pipelines import runtime

  info = runtime.split_info(dataset.path, split)
  if model_uri:
    values = scalar_metrics(run_evaluate(model_uri, dataset.path, task, evaluation.path, split=split,
                                         sampler=sampler, max_decode_len=max_decode_len, limit=limit,
                                         batch_size=batch_size))
    for name, value in values.items():
      metrics.log_metric(name, value)
    shutil.copyfile(os.path.join(evaluation.path, "report.html"), report.path)
  else:
    with open(report.path, "w") as f:
      f.write("<p>No champion to re-score: the tuned model is compared with the base model.</p>\n")
  runtime.write_split_info(evaluation.path, info)
  evaluation.metadata.update({"task": task, "split": split, "model_uri": model_uri, "split_fingerprint":
                              info["fingerprint"]})


def gate(task: str, base_evaluation: Input[Artifact], tuned_evaluation: Input[Artifact],
         champion_evaluation: Input[Artifact], champion: str, min_metric: float, min_improvement: float,
         explanation: Output[Markdown], decision: Output[Artifact]) -> NamedTuple("GateOutputs", passed=bool, reason=str):
  """Promote only a tuned model that beats the champion re-scored on this run's split (or the base model)."""
  import dataclasses
  import json

  from pipelines import gate, runtime

  read = json.loads(champion)
  current = read["record"]
  tuned_metrics = runtime.read_metrics(tuned_evaluation.path)
  split = runtime.read_split_info(champion_evaluation.path)
  if split is not None:
    split["scored"] = tuned_metrics.get("num_examples")
  champion_metrics = runtime.read_metrics(champion_evaluation.path) if current and not read["rebaseline"] else None
  result = gate.decide(task, tuned_metrics, runtime.read_metrics(base_evaluation.path), current, champion_metrics,
                       split=split, rebaseline=read["rebaseline"], min_metric=min_metric,
                       min_improvement=min_improvement)
  print(f"[gate] {result.reason}", flush=True)
  with open(explanation.path, "w") as f:
    f.write(result.to_markdown(current))
  with open(decision.path, "w") as f:
    json.dump({**dataclasses.asdict(result), "champion_uri": read["location"], "champion": current,
               "champion_generation": read["generation"], "champion_metrics": champion_metrics,
               "base_metrics": runtime.read_metrics(base_evaluation.path), "tuned_metrics": tuned_metrics,
               "tuned_report": runtime.report_path(tuned_evaluation.path)}, f, indent=2)
  decision.metadata.update({"passed": result.passed, "metric": result.metric, "tuned": result.tuned,
                            "reference": result.reference, "reference_name": result.reference_name})
  outputs = NamedTuple("GateOutputs", passed=bool, reason=str)
  return outputs(result.passed, result.reason)


def promote(exported: Input[Model], decision: Input[Artifact], task: str, run_id: str, base_model: str,
            dataset_uri: str):
  """Records the exported model as the new champion, where the next (scheduled) run reads it — only if the
  record is still what this run's gate compared with; else another run promoted meanwhile and this task fails
  saying so (champion.ChampionChanged), leaving the other run's record in place."""
  import json

  from pipelines import champion

  with open(decision.path) as f:
    result = json.load(f)
  location = result["champion_uri"]
  if not location:
    print("[promote] no export_uri or champion_uri: the champion is not recorded", flush=True)
    return
  split = {k: v for k, v in (result.get("split") or {}).items() if k in ("name", "fingerprint", "examples")}
  record = champion.new_record(model_uri=exported.metadata.get("uri", exported.uri), metric=result["metric"],
                               value=result["tuned"], task=task, run_id=run_id, base_model=base_model,
                               dataset=dataset_uri, split=split or None)
  try:
    champion.write(location, record, if_generation=result["champion_generation"])
  except champion.ChampionChanged as e:
    print(f"[promote] NOT PROMOTED: {e}", flush=True)
    raise
  print(f"[promote] champion record written to {location}: {record['model_uri']}", flush=True)


# Each step's `make(image)` rebuilds that step's component for another container image.
STEP_COMPONENTS = {"download": download_component.make, "convert": convert_component.make,
                   "finetune": finetune_component.make, "evaluate": evaluate_component.make,
                   "export": export_component.make}
PIPELINE_COMPONENTS = {"fingerprint": fingerprint_dataset, "champion": read_champion, "rescore": rescore_champion,
                       "gate": gate, "promote": promote}


def make_components(image: str) -> types.SimpleNamespace:
  """The DAG's ten components, all running in `image` (which already holds this package and kfp)."""
  ops = {name: make(image) for name, make in STEP_COMPONENTS.items()}
  ops.update({name: dsl.component(func, base_image=image, install_kfp_package=False)
              for name, func in PIPELINE_COMPONENTS.items()})
  for name, op in ops.items():
    op.component_spec.name = name  # short task names in the DAG, whatever the function is called
  return types.SimpleNamespace(**ops)
