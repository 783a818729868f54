"""The promotion gate: does the tuned model beat the model in service on the task's headline metric, on the
same data?

The model to beat is the champion (the record the last promoted run wrote), re-scored in this run on this
run's validation split with the same evaluation settings as the tuned model — its stored score came from
the split of its own day, which a growing dataset has changed since. Without a champion (or when the run
re-baselines) it is the base model. Optionally the tuned model must also reach an absolute threshold, and
beat the model to beat by a margin. The decision comes with a human-readable reason and a Markdown table
of every number (tuned, base, champion re-scored, champion stored) and the split they came from.

A champion recorded for another task or metric is no reference: `ChampionMismatch` stops the run early,
unless the run re-baselines (then the record is replaced if the tuned model passes).
"""
from __future__ import annotations

import dataclasses

# The metric each task is judged by (keys of the evaluate step's metrics.json).
HEADLINE_METRIC = {"detect": "map50", "caption": "cider", "vqa": "accuracy", "ocr": "anls",
                   "segment": "mask_map50"}


class ChampionMismatch(ValueError):
  """The champion record was written for another task or metric."""


@dataclasses.dataclass(frozen=True)
class Decision:
  passed: bool
  metric: str
  tuned: float | None        # None: the metric is undefined (e.g. a split with no ground-truth objects)
  base: float | None
  reference_name: str        # "champion" or "base model"
  reference: float | None
  reason: str
  champion_rescored: float | None = None  # the champion on this run's split (the reference when it exists)
  champion_stored: float | None = None    # the score in its record, from the split of its own run
  split: dict | None = None               # this run's split: name, fingerprint, examples (convert's report)
  rebaseline: bool = False

  def to_markdown(self, champion: dict | None) -> str:
    verdict = "**promoted**" if self.passed else "**not promoted**"
    lines = [f"## Gate: {verdict}", "", self.reason, ""]
    if self.split:
      lines += [f"Scored on split `{self.split.get('name')}` of this run's dataset: fingerprint "
                f"`{self.split.get('fingerprint')}`, {self.split.get('examples')} examples"
                + (f" ({self.split['scored']} scored: eval_limit)" if self.split.get("scored") not in
                   (None, self.split.get("examples")) else "") + ".", ""]
    lines += [f"| model | {self.metric} | scored on |", "|---|---|---|",
              f"| tuned | {_fmt(self.tuned)} | this run's split |",
              f"| base | {_fmt(self.base)} | this run's split |"]
    if champion:
      who = f"champion ({champion.get('run_id', '?')}, {champion.get('date', '?')})"
      if self.champion_rescored is not None or not self.rebaseline:
        lines.append(f"| {who}, re-scored | {_fmt(self.champion_rescored)} | this run's split |")
      lines.append(f"| {who}, stored when promoted | {_fmt(self.champion_stored)} | {_stored_split(champion, self.split)} |")
    if self.rebaseline and champion:
      lines += ["", f"Re-baseline: the champion record ({champion.get('task', '?')}, {champion.get('metric')}) is "
                "not compared with; it is replaced if the tuned model passes."]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
  return "undefined" if value is None else f"{value:.4f}"


def _stored_split(champion: dict, today: dict | None) -> str:
  split = champion.get("split") or {}
  if not split.get("fingerprint"):
    return "unknown split (recorded before splits had fingerprints)"
  same = bool(today) and split.get("fingerprint") == today.get("fingerprint")
  return (f"split `{split.get('name')}` `{split['fingerprint']}` ({split.get('examples')} examples): "
          + ("this run's split" if same else "not this run's split"))


def headline_metric(task: str) -> str:
  try:
    return HEADLINE_METRIC[task]
  except KeyError:
    raise ValueError(f"unknown task {task!r}; the gate knows {sorted(HEADLINE_METRIC)}") from None


def check_champion(record: dict, task: str, location: str = "the champion record") -> None:
  """Raises `ChampionMismatch` (saying how to re-baseline) when `record` was written for another task/metric."""
  metric = headline_metric(task)
  recorded_task = record.get("task", task)  # records from before the task was written: the metric decides
  if record.get("metric") != metric or recorded_task != task:
    raise ChampionMismatch(
        f"{location} holds a champion for task {recorded_task!r} judged by {record.get('metric')!r}, but this "
        f"run is task {task!r} judged by {metric!r}: their scores cannot be compared, and promoting would "
        "overwrite the other champion. Give this task its own champion_uri (or export_uri), or start a new "
        "champion here on purpose with --param rebaseline=true (the tuned model is then compared with the base "
        "model and replaces the record if it passes).")


def model_to_rescore(record: dict | None, task: str, *, rebaseline: bool = False, location: str = "") -> str:
  """The champion's model URI to evaluate on this run's split, or "" when there is none to compare with."""
  if record is None or rebaseline:
    return ""
  check_champion(record, task, location or "the champion record")
  return record["model_uri"]


def _value(metrics: dict, metric: str, which: str) -> float | None:
  if metric not in metrics:
    raise KeyError(f"the {which} evaluation has no {metric!r} metric (it has {sorted(metrics)}); "
                   "was it evaluated on the same task?")
  return None if metrics[metric] is None else float(metrics[metric])


def decide(task: str, tuned: dict, base: dict, champion: dict | None = None, champion_metrics: dict | None = None,
           *, split: dict | None = None, rebaseline: bool = False, min_metric: float = 0.0,
           min_improvement: float = 0.0) -> Decision:
  """Tuned is promoted iff it reaches `min_metric` and beats the reference by > `min_improvement`.

  The reference is the champion's score re-scored on this run's split (`champion_metrics`) when a champion
  record exists, else the base model's. A record for another task/metric raises `ChampionMismatch` unless
  `rebaseline` (then the base model is the reference). `split` (name, fingerprint, examples) is reported."""
  metric = headline_metric(task)
  tuned_value = _value(tuned, metric, "tuned model's")
  base_value = _value(base, metric, "base model's")
  stored = rescored = None
  if champion is not None:
    if not rebaseline:
      check_champion(champion, task)
    stored = float(champion["value"]) if champion.get("value") is not None else None
  if champion is not None and not rebaseline:
    if champion_metrics is None:
      raise ValueError("a champion exists but was not re-scored on this run's split: its stored score comes from "
                       "the split of its own run and is no reference (evaluate its model_uri on this split)")
    rescored = _value(champion_metrics, metric, "champion's re-scored")
    reference_name, reference = "champion", rescored
  else:
    reference_name, reference = "base model", base_value
  where = f" on this run's {split['name']} split" if split and split.get("name") else ""

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
              f"{reference:.4f}{margin}{where}; the {reference_name} stays in service and nothing is exported.")
  else:
    passed = True
    reason = (f"The tuned model's {metric} {tuned_value:.4f} beats the {reference_name}'s {reference:.4f} "
              f"(+{tuned_value - reference:.4f}){where}; it is exported and becomes the champion.")
  return Decision(passed, metric, tuned_value, base_value, reference_name, reference, reason,
                  champion_rescored=rescored, champion_stored=stored, split=split, rebaseline=rebaseline)
