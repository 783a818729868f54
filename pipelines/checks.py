"""Checks of the pipeline CLIs' arguments, run before any step: each failure is one line naming the flag.

Only the standard library: the CLIs call these before importing kfp or a cloud SDK.
"""
from __future__ import annotations

import argparse
import os
import re


def _number(kind, text: str, ok, what: str):
  """An argparse `type`: `text` as `kind`, which `ok(value)` must accept ("argument --batch: must be ...")."""
  try:
    value = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not ok(value):
    raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
  return value


def positive_int(text: str) -> int:
  return _number(int, text, lambda v: v > 0, "a whole number above 0")


def non_negative_int(text: str) -> int:
  return _number(int, text, lambda v: v >= 0, "0 or more")


def positive_float(text: str) -> float:
  return _number(float, text, lambda v: v > 0, "above 0")


def local_input(flag: str, value: str | None, names_allowed: bool = False) -> None:
  """A local file or directory the run reads must exist. URIs (gs://, hf://, kaggle://, ...) are left to the
  step that reads them; with `names_allowed`, so is a bare name (`paligemma2-3b-pt-224`, `kaggle`,
  `notebook_attention_sgd`): anything without a path separator that does not start with `.` or `~`."""
  if not value or "://" in value:
    return
  if names_allowed and "/" not in value and os.sep not in value and not value.startswith((".", "~")):
    return
  if not os.path.exists(os.path.expanduser(value)):
    raise ValueError(f"{flag} {value}: no such file or directory")


# One field of a 5-field cron expression: `*`, `N`, `N-M`, each optionally `/STEP`, comma-separated; months
# and weekdays also by name (`jan`, `mon`), as Vertex AI and KFP (robfig/cron) accept them.
_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
                ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
_CRON_FORMAT = ("5 fields 'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK', e.g. '0 3 * * 1' (Mondays at 03:00) or "
                "'*/30 * * * *' (every 30 minutes); an optional 'TZ=Area/City ' prefix")


def _cron_value(text: str, low: int, high: int, names: tuple) -> bool:
  if text.lower() in names:
    return True
  return text.isdigit() and low <= int(text) <= high


def _cron_field(text: str, low: int, high: int, names: tuple) -> bool:
  for part in text.split(","):
    span, _, step = part.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
      return False
    if span == "*":
      continue
    ends = span.split("-")
    if len(ends) > 2 or not all(_cron_value(end, low, high, names) for end in ends):
      return False
  return True


def cron(flag: str, expression: str) -> None:
  """A schedule Vertex AI and KFP both take (5 fields, an optional `TZ=` or `CRON_TZ=` prefix); raises
  ValueError naming the flag and the format."""
  fields = expression.split()
  if fields and re.fullmatch(r"(CRON_)?TZ=[\w+\-/]+", fields[0]):
    fields = fields[1:]
  if len(fields) != 5:
    raise ValueError(f"{flag} {expression!r} is not a cron expression: it needs {_CRON_FORMAT}")
  for text, (name, low, high, names) in zip(fields, _CRON_FIELDS):
    if not _cron_field(text, low, high, names):
      raise ValueError(f"{flag} {expression!r}: {text!r} is not a valid {name} ({low}-{high}); the format is "
                       f"{_CRON_FORMAT}")
