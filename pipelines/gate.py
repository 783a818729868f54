"""The promotion gate: does the tuned model beat the model in service on the task's headline metric?

The model to beat is the champion (the record written by the last promoted run), or the base model when no
champion exists yet. Optionally the tuned model must also reach an absolute threshold, and beat the model
to beat by a margin. The decision comes with a human-readable reason, shown in the run as Markdown.
"""
from __future__ import annotations

import dataclasses

# The metric each task is judged by (keys of the evaluate step's metrics.json).
HEADLINE_METRIC = {"detect": "map50", "caption": "cider", "vqa": "accuracy", "ocr": "anls"}


@dataclasses.dataclass(frozen=True)
class Decision:
  passed: bool
  metric: str
  tuned: float | None        # None: the metric is undefined (e.g. a split with no ground-truth objects)
  base: float | None
  reference_name: str        # "champion" or "base model"
  reference: float | None
  reason: str

  def to_markdown(self, champion: dict | None) -> str:
    verdict = "**promoted**" if self.passed else "**not promoted**"
    lines = [
        f"## Gate: {verdict}", "", self.reason, "",
        f"| model | {self.metric} |", "|---|---|",
        f"| tuned | {_fmt(self.tuned)} |",
        f"| base | {_fmt(self.base)} |",
    ]
    if champion:
      lines.append(f"| champion ({champion.get('run_id', '?')}, {champion.get('date', '?')}) "
                   f"| {float(champion['value']):.4f} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
  return "undefined" if value is None else f"{value:.4f}"


def headline_metric(task: str) -> str:
  try:
    return HEADLINE_METRIC[task]
  except KeyError:
    raise ValueError(f"unknown task {task!r}; the gate knows {sorted(HEADLINE_METRIC)}") from None


def _value(metrics: dict, metric: str, which: str) -> float | None:
  if metric not in metrics:
    raise KeyError(f"the {which} evaluation has no {metric!r} metric (it has {sorted(metrics)}); "
                   "was it evaluated on the same task?")
  return None if metrics[metric] is None else float(metrics[metric])


def decide(task: str, tuned: dict, base: dict, champion: dict | None = None, *,
           min_metric: float = 0.0, min_improvement: float = 0.0) -> Decision:
  """Tuned is promoted iff it reaches `min_metric` and beats the champion (else base) by > `min_improvement`."""
  metric = headline_metric(task)
  tuned_value = _value(tuned, metric, "tuned model's")
  base_value = _value(base, metric, "base model's")
  if champion is not None and champion.get("metric") == metric:
    reference_name, reference = "champion", float(champion["value"])
  else:
    reference_name, reference = "base model", base_value

  if tuned_value is None or reference is None:
    passed = False
    which = "tuned model's" if tuned_value is None else f"{reference_name}'s"
    reason = (f"The {which} {metric} is undefined (the evaluation split has nothing to score it on, e.g. no "
              f"ground-truth objects), so the models cannot be compared; nothing is exported. Evaluate on a "
              f"split with labelled examples.")
  elif tuned_value < min_metric:
    passed = False
    reason = (f"The tuned model's {metric} {tuned_value:.4f} is below the required threshold "
              f"{min_metric:.4f}; nothing is exported.")
  elif tuned_value <= reference + min_improvement:
    passed = False
    margin = f" by more than {min_improvement:.4f}" if min_improvement else ""
    reason = (f"The tuned model's {metric} {tuned_value:.4f} does not beat the {reference_name}'s "
              f"{reference:.4f}{margin}; the {reference_name} stays in service and nothing is exported.")
  else:
    passed = True
    reason = (f"The tuned model's {metric} {tuned_value:.4f} beats the {reference_name}'s {reference:.4f} "
              f"(+{tuned_value - reference:.4f}); it is exported and becomes the champion.")
  return Decision(passed, metric, tuned_value, base_value, reference_name, reference, reason)
