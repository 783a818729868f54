"""A fix for the KFP local runner's `dsl.If`, so the local target runs the same DAG as the cloud ones.

kfp 2.16's local orchestrator (`kfp.local.orchestrator.enhanced_dag_orchestrator.ConditionEvaluator`)
substitutes channel names inside the compiled condition, e.g.
`inputs.parameter_values['pipelinechannel--gate-passed'] == true`, and then `eval`s what is left: `inputs`
and `true` are not Python, so every condition evaluates to False (and named outputs such as `gate-passed`
are not found at all). Vertex AI and the KFP backend evaluate these conditions as CEL.

`install()` replaces the evaluator's one method with one that resolves each
`inputs.parameter_values['pipelinechannel--X']` to its value and evaluates the comparison with CEL's
literals, failing loudly (instead of silently skipping the branch) on anything it cannot read.
"""
from __future__ import annotations

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


def install() -> None:
  from kfp.local.orchestrator import enhanced_dag_orchestrator

  enhanced_dag_orchestrator.ConditionEvaluator.evaluate_condition = staticmethod(evaluate_condition)
