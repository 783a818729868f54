"""The DAG's components, bound to a target's container image by `make_components(image)`.

download, convert, finetune, evaluate and export are the steps' own components
(`components/<step>/component.py`, the same ones a user compiles alone; their bodies call the step's core
in process, as its CLI does), rebuilt here for the target's image. gate and promote are the pipeline's own
(`pipelines.gate`, `pipelines.champion`). Each body is shipped to the container as source (KFP
lightweight components), so it imports what it needs inside, and only modules that do not build
components: KFP's executor has a reduced `kfp.dsl` without `component`.

(No `from __future__ import annotations` here: KFP reads the annotations as types.)
"""
import types
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components.convert import component as convert_component
from components.download import component as download_component
from components.evaluate import component as evaluate_component
from components.export import component as export_component
from components.finetune import component as finetune_component


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


# Each step's `make(image)` rebuilds that step's component for another container image.
STEP_COMPONENTS = {"download": download_component.make, "convert": convert_component.make,
                   "finetune": finetune_component.make, "evaluate": evaluate_component.make,
                   "export": export_component.make}
PIPELINE_COMPONENTS = {"gate": gate, "promote": promote}


def make_components(image: str) -> types.SimpleNamespace:
  """The DAG's seven components, all running in `image` (which already holds this package and kfp)."""
  ops = {name: make(image) for name, make in STEP_COMPONENTS.items()}
  ops.update({name: dsl.component(func, base_image=image, install_kfp_package=False)
              for name, func in PIPELINE_COMPONENTS.items()})
  for name, op in ops.items():
    op.component_spec.name = name  # short task names in the DAG, whatever the function is called
  return types.SimpleNamespace(**ops)
