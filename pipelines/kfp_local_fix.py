"""Six fixes for the KFP local runner, so the local target runs the same DAG as the cloud ones.

They replace private functions of kfp's local runner, so they are written against one release line,
`SUPPORTED_KFP` (pyproject.toml pins it); `install()` refuses any other kfp.

1. `dsl.If`.
kfp 2.16's local orchestrator (`kfp.local.orchestrator.enhanced_dag_orchestrator.ConditionEvaluator`)
substitutes channel names inside the compiled condition, e.g.
`inputs.parameter_values['pipelinechannel--gate-passed'] == true`, and then `eval`s what is left: `inputs`
and `true` are not Python, so every condition evaluates to False (and named outputs such as `gate-passed`
are not found at all). Vertex AI and the KFP backend evaluate these conditions as CEL.

`install()` replaces the evaluator's one method with one that resolves each
`inputs.parameter_values['pipelinechannel--X']` to its value and evaluates the comparison with CEL's
literals, failing loudly (instead of silently skipping the branch) on anything it cannot read.

2. Optional inputs without a value: an input artifact that was not passed (`baseline: Input[Artifact] =
None`, the evaluate step's), a parameter whose value is None (`lr: Optional[float] = None`, the finetune
step's). kfp 2.16's `executor_input_utils.construct_executor_input` raises KeyError for the first and
cannot serialise the second. The fix leaves such inputs out of the executor input, which is what the KFP
backend does; the component then receives its default (None).

3. `dsl.PIPELINE_JOB_NAME_PLACEHOLDER` inside a `dsl.If` branch: the enhanced orchestrator runs the branch
as a nested DAG named `<job>/condition-1` (to keep its output paths apart) and substitutes that nested name
for the job name, so the export step wrote to `models/<job>/condition-1`. Vertex AI and KFP give the run's
name; the fix substitutes the root name (the part before the first `/`) for that one placeholder.

4. Optional pipeline parameters without a default (`lr: Optional[float] = None`): kfp 2.16's
`OrchestratorUtils.join_user_inputs_and_defaults` fails on their empty default ("Unknown value type")
when the run does not set them. The fix gives them None, which fix 2 then leaves out of the step's input
(the KFP backend treats them the same way since 2.5).

5. The interpreter of a step: kfp 2.16's `subprocess_task_handler.replace_python_executable` replaces the
text `python3` with this interpreter's path in every element of the command line but the component's
source, so also in the arguments after it: the executor input, whose paths and values then break wherever
they contain `python3`, e.g. a config file in `.../lib/python3.11/site-packages/` (any installed,
non-editable package). The fix replaces it only in the launcher script before the source, where kfp
writes the `python3` it means.

6. Live, quiet step output: kfp 2.16's `subprocess_task_handler.run_local_subprocess` starts the step's
process with a pipe for its output, so that process block-buffers what it prints (a progress line arrives
when the step ends), and re-prints each line without flushing (block-buffered again when our stdout is a
file or a pipe). Around them the runner prints each step's whole executor input and outputs as JSON. The
fix runs the step with `step_environment()` (unbuffered Python; no TPU probe on a machine without a TPU),
prints each line as it arrives, flushed, leaves out the executor's bookkeeping (its input JSON, module
loading, output file), and hands each line shown to `LINE_HOOK` when that is set.
`quiet_orchestrator_logs()` does the same for the runner's own log records.
"""
from __future__ import annotations

import copy
import glob
import importlib.util
import os
import re
import contextlib
import subprocess

SUPPORTED_KFP = ((2, 16), (2, 17))  # [lowest, highest) release line these fixes are written against


class UnsupportedKfpError(RuntimeError):
  """The installed kfp is not the release line the local-runner fixes were written against."""

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


def _without_unset_optional_inputs(construct):
  def construct_executor_input(component_spec, arguments, *args, **kwargs):
    inputs = component_spec.input_definitions
    artifacts = [name for name, spec in inputs.artifacts.items() if spec.is_optional and name not in arguments]
    parameters = [name for name, spec in inputs.parameters.items() if spec.is_optional and (
        arguments[name] is None if name in arguments else not spec.HasField("default_value"))]
    if artifacts or parameters:
      component_spec = copy.deepcopy(component_spec)
      for name in artifacts:
        del component_spec.input_definitions.artifacts[name]
      for name in parameters:
        del component_spec.input_definitions.parameters[name]
      arguments = {k: v for k, v in arguments.items() if k not in parameters}
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


def _unset_optional_parameters_are_none(join):
  def join_user_inputs_and_defaults(dag_arguments, dag_inputs_spec):
    unset = {name: None for name, spec in dag_inputs_spec.parameters.items()
             if name not in dag_arguments and spec.is_optional and not spec.HasField("default_value")}
    return join({**dag_arguments, **unset}, dag_inputs_spec)

  join_user_inputs_and_defaults.fixed_by_pipelines = True
  return join_user_inputs_and_defaults


def _python_only_in_the_launcher(replace):
  def replace_python_executable(full_command, new_executable):
    for i, element in enumerate(full_command):
      if '"$program_path/ephemeral_component.py"' in element and '"$@"' in element:  # the launcher script
        return replace(full_command[:i + 1], new_executable) + list(full_command[i + 1:])
    return replace(full_command, new_executable)

  replace_python_executable.fixed_by_pipelines = True
  return replace_python_executable


# Fix 6: called with each line shown (None: nobody); pipelines.local collects the steps' warnings with it.
LINE_HOOK = None
_EXECUTOR_LINE = re.compile(r"^\s*\[KFP Executor [^\]]* (?P<level>[A-Z]+)\]: (?P<message>.*)$", re.S)
_EXECUTOR_BOOKKEEPING = ("Looking for component", "Loading KFP component", "Wrote executor output file")


def has_tpu() -> bool:
  """A TPU VM exposes its chips as /dev/accel* (v4, v5p, v6e) or /dev/vfio/<n> (v5e)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def step_environment(environ=None) -> dict:
  """The environment of a step's process: unbuffered Python (its progress lines arrive as they are printed)
  and, where libtpu is installed but there is no TPU (and no GPU, nor JAX_PLATFORMS chosen by the user), JAX
  on the CPU, so that it does not print libtpu's failed probe ("INVALID_ARGUMENT ...", lockfile advice)."""
  env = dict(os.environ if environ is None else environ)
  env["PYTHONUNBUFFERED"] = "1"
  if ("JAX_PLATFORMS" not in env and importlib.util.find_spec("libtpu") is not None and not has_tpu()
      and not glob.glob("/dev/nvidia[0-9]*")):
    env["JAX_PLATFORMS"] = "cpu"
  return env


def shown_lines(lines):
  """The lines of a step's output worth showing: the executor's bookkeeping (its input as JSON, which module
  it loads, where it wrote its output) left out, its own prefix dropped from the rest."""
  in_executor_input = False
  for line in lines:
    if in_executor_input:  # the JSON after "Got executor_input:" ends with a "}" in the first column
      in_executor_input = not line.startswith("}")
      continue
    if m := _EXECUTOR_LINE.match(line):
      message = m["message"]
      if message.startswith("Got executor_input:"):
        in_executor_input = True
        continue
      if message.startswith(_EXECUTOR_BOOKKEEPING):
        continue
      line = message if m["level"] == "INFO" else f"{m['level']}: {message}"
    if line.strip():
      yield line


def run_local_subprocess(full_command) -> int:
  """kfp's `run_local_subprocess`, live and quiet (fix 6)."""
  with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                        errors="replace", env=step_environment()) as process:
    for line in shown_lines(iter(process.stdout.readline, "")):
      if LINE_HOOK:
        LINE_HOOK(line)
      print(line, end="" if line.endswith("\n") else "\n", flush=True)
    return process.wait()


class _QuietOrchestrator:
  """A root-logger filter: drops the local runner's records that repeat what the steps said (their outputs,
  as JSON or artifact reprs) or only frame it ("Streamed logs:")."""

  def filter(self, record) -> bool:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(record.msg))
    return not (text.startswith(("Streamed logs:", "Cleaned up workspace"))
                or re.match(r"Task '?[\w-]+'? (outputs:|has no outputs)", text))


@contextlib.contextmanager
def quiet_orchestrator_logs():
  """While in it: the filter on the root logger (which keeps it while the runner swaps the handlers), and
  no horizontal rules between the tasks."""
  import logging

  from kfp.local import logging_utils

  quiet, rule = _QuietOrchestrator(), logging_utils.print_horizontal_line
  logging.getLogger().addFilter(quiet)
  logging_utils.print_horizontal_line = lambda: None
  try:
    yield
  finally:
    logging.getLogger().removeFilter(quiet)
    logging_utils.print_horizontal_line = rule


def check_version(version: str) -> None:
  """Raises UnsupportedKfpError unless `version` is in the SUPPORTED_KFP release line."""
  (low, high), numbers = SUPPORTED_KFP, tuple(int(n) for n in re.findall(r"\d+", version)[:2])
  if not low <= numbers < high:
    wanted = f"kfp>={low[0]}.{low[1]},<{high[0]}.{high[1]}"
    raise UnsupportedKfpError(
        f"kfp {version} is installed, but the local runner's fixes (pipelines/kfp_local_fix.py) are written "
        f"against {wanted}; install the tested version: pip install '{wanted}' (or pip install -c constraints.txt .)")


def install() -> None:
  """Idempotent; affects only the KFP local runner of this process. Raises UnsupportedKfpError on a kfp
  release these fixes were not written against."""
  import kfp
  from kfp.local import executor_input_utils, placeholder_utils, subprocess_task_handler
  from kfp.local.orchestrator import enhanced_dag_orchestrator, orchestrator_utils

  check_version(kfp.__version__)
  enhanced_dag_orchestrator.ConditionEvaluator.evaluate_condition = staticmethod(evaluate_condition)
  if not getattr(executor_input_utils.construct_executor_input, "fixed_by_pipelines", False):
    executor_input_utils.construct_executor_input = _without_unset_optional_inputs(
        executor_input_utils.construct_executor_input)
  if not getattr(subprocess_task_handler.replace_python_executable, "fixed_by_pipelines", False):
    subprocess_task_handler.replace_python_executable = _python_only_in_the_launcher(
        subprocess_task_handler.replace_python_executable)
  utils = orchestrator_utils.OrchestratorUtils
  if not getattr(utils.join_user_inputs_and_defaults, "fixed_by_pipelines", False):
    utils.join_user_inputs_and_defaults = staticmethod(_unset_optional_parameters_are_none(
        utils.join_user_inputs_and_defaults))
  subprocess_task_handler.run_local_subprocess = run_local_subprocess
  if not getattr(placeholder_utils.resolve_individual_placeholder, "fixed_by_pipelines", False):
    placeholder_utils.resolve_individual_placeholder = _root_job_name(placeholder_utils.resolve_individual_placeholder)
