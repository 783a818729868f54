"""Three fixes for the KFP local runner, so the local target runs the same DAG as the cloud ones.

1. `dsl.If`.
kfp 2.16's local orchestrator (`kfp.local.orchestrator.enhanced_dag_orchestrator.ConditionEvaluator`)
substitutes channel names inside the compiled condition, e.g.
`inputs.parameter_values['pipelinechannel--gate-passed'] == true`, and then `eval`s what is left: `inputs`
and `true` are not Python, so every condition evaluates to False (and named outputs such as `gate-passed`
are not found at all). Vertex AI and the KFP backend evaluate these conditions as CEL.

`install()` replaces the evaluator's one method with one that resolves each
`inputs.parameter_values['pipelinechannel--X']` to its value and evaluates the comparison with CEL's
literals, failing loudly (instead of silently skipping the branch) on anything it cannot read.

2. Optional input artifacts (`baseline: Input[Artifact] = None`, the evaluate step's): kfp 2.16's
`executor_input_utils.construct_executor_input` looks every declared input artifact up in the task's
arguments and raises KeyError for an optional one that was not passed. The fix leaves such inputs out of
the executor input, which is what the KFP backend does; the component then receives its default (None).

3. `dsl.PIPELINE_JOB_NAME_PLACEHOLDER` inside a `dsl.If` branch: the enhanced orchestrator runs the branch
as a nested DAG named `<job>/condition-1` (to keep its output paths apart) and substitutes that nested name
for the job name, so the export step wrote to `models/<job>/condition-1`. Vertex AI and KFP give the run's
name; the fix substitutes the root name (the part before the first `/`) for that one placeholder.
"""
from __future__ import annotations

import copy
import re

_CHANNEL = re.compile(r"inputs\.parameter_values\['pipelinechannel--(?P<name>[A-Za-z0-9_\-]+)'\]")
_CEL_WORDS = {"true": "True", "false": "False", "null": "None", "&&": " and ", "||": " or "}


def _resolve(name: str, io_store):
  """`TASK-OUTPUT` (task names contain '-': try each split) or a pipeline input named `name`."""
  for i in [m.start() for m in re.finditer("-", name)]:
    task, key = name[:i], name[i + 1:]
    try:
      return io_store.get_task_output(task, key)
    except (KeyError, ValueError):
      continue
  return io_store.get_parent_input(name)


def evaluate_condition(condition: str, io_store) -> bool:
  if not condition.strip():
    return True
  values = {}

  def substitute(match):
    key = f"_v{len(values)}"
    values[key] = _resolve(match["name"], io_store)
    return key

  expression = _CHANNEL.sub(substitute, condition)
  for cel, python in _CEL_WORDS.items():
    expression = re.sub(rf"(?<![\w'\"]){re.escape(cel)}(?![\w'\"])", python, expression)
  expression = re.sub(r"!(?!=)", " not ", expression)
  return bool(eval(expression, {"__builtins__": {}, "int": int, "float": float, "str": str}, values))  # noqa: S307


def _without_unpassed_optional_artifacts(construct):
  def construct_executor_input(component_spec, arguments, *args, **kwargs):
    artifacts = component_spec.input_definitions.artifacts
    unpassed = [name for name, spec in artifacts.items() if spec.is_optional and name not in arguments]
    if unpassed:
      component_spec = copy.deepcopy(component_spec)
      for name in unpassed:
        del component_spec.input_definitions.artifacts[name]
    return construct(component_spec, arguments, *args, **kwargs)

  construct_executor_input.fixed_by_pipelines = True
  return construct_executor_input


def _root_job_name(resolve):
  from kfp import dsl

  def resolve_individual_placeholder(element, *args, pipeline_resource_name, **kwargs):
    if isinstance(element, str):
      element = element.replace(dsl.PIPELINE_JOB_NAME_PLACEHOLDER, pipeline_resource_name.split("/")[0])
    return resolve(element, *args, pipeline_resource_name=pipeline_resource_name, **kwargs)

  resolve_individual_placeholder.fixed_by_pipelines = True
  return resolve_individual_placeholder


def install() -> None:
  """Idempotent; affects only the KFP local runner of this process."""
  from kfp.local import executor_input_utils, placeholder_utils
  from kfp.local.orchestrator import enhanced_dag_orchestrator

  enhanced_dag_orchestrator.ConditionEvaluator.evaluate_condition = staticmethod(evaluate_condition)
  if not getattr(executor_input_utils.construct_executor_input, "fixed_by_pipelines", False):
    executor_input_utils.construct_executor_input = _without_unpassed_optional_artifacts(
        executor_input_utils.construct_executor_input)
  if not getattr(placeholder_utils.resolve_individual_placeholder, "fixed_by_pipelines", False):
    placeholder_utils.resolve_individual_placeholder = _root_job_name(placeholder_utils.resolve_individual_placeholder)
