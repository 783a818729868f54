"""The command lines' shared behaviour: a user's mistake is one line and exit status 2, and a flag's old
spelling still works, with a one-line notice naming the new one.

    p = cli.ArgumentParser(prog="python -m components.evaluate")
    p.add_argument("--batch", type=int, deprecated=("--batch-size",), help="examples per decoding step")
    args = p.parse_args()             # `--batch-size 4` works and prints: ...: --batch-size is deprecated, use --batch
    return cli.report(p, "--data DIR has no valid.jsonl")  # prints `python -m components.evaluate: error: ...`; 2

Only argparse and the standard library are imported here: `--help` stays fast (no jax, kfp or cloud SDK
before the arguments are parsed).
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

USAGE_ERROR = 2  # argparse's own exit status for a bad command line; every CLI uses it for a user's mistake


class ArgumentParser(argparse.ArgumentParser):
  """argparse with one-line errors (`PROG: error: MESSAGE (see --help)`, exit 2, no usage block) and
  deprecated aliases: `add_argument(..., deprecated=("--old-name",))` accepts the old spelling, hides it from
  `--help` and prints `PROG: --old-name is deprecated, use --new-name` when it is used."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._deprecated: dict[str, str] = {}  # old spelling -> the flag to use
    self._required: dict[str, str] = {}  # dest -> flag, for required flags that also have an old spelling

  def add_argument(self, *names, deprecated=(), **kwargs):
    if deprecated and kwargs.get("required"):  # argparse checks `required` per spelling: check it after parsing
      kwargs["required"] = False
      required = True
    else:
      required = False
    action = super().add_argument(*names, **kwargs)
    alias = {k: v for k, v in kwargs.items() if k not in ("help", "required", "default", "dest", "metavar")}
    for old in deprecated:
      super().add_argument(old, dest=action.dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **alias)
      self._deprecated[old] = action.option_strings[-1]
    if required:
      self._required[action.dest] = action.option_strings[-1]
    return action

  def parse_known_args(self, args=None, namespace=None):
    args = sys.argv[1:] if args is None else list(args)
    for arg in args:
      if arg == "--":
        break
      flag = arg.split("=", 1)[0]
      if flag in self._deprecated:
        print(f"{self.prog}: {flag} is deprecated, use {self._deprecated[flag]}", file=sys.stderr)
    namespace, rest = super().parse_known_args(args, namespace)
    missing = [flag for dest, flag in self._required.items() if getattr(namespace, dest, None) is None]
    if missing:
      self.error(f"the following arguments are required: {', '.join(missing)}")
    return namespace, rest

  def error(self, message: str) -> NoReturn:
    fail(self, f"{message} (see --help)")


def report(parser: argparse.ArgumentParser | str, message: str) -> int:
  """Prints `PROG: error: MESSAGE` on one line (a message's line breaks become spaces) and returns 2, the
  exit status of a mistake the user can fix: `return cli.report(parser, str(e))` in a CLI's main. `parser` is
  the parser (its prog) or the program's name."""
  prog = parser if isinstance(parser, str) else parser.prog
  print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
  return USAGE_ERROR


def fail(parser: argparse.ArgumentParser | str, message: str) -> NoReturn:
  """`report`, then exit (status 2)."""
  raise SystemExit(report(parser, message))
