"""A failed step of a local run, said in one line: the step's name and its own last error message, with the
full log kept in a file (the KFP local runner's answer is `RuntimeError: ... Inner task failed: .` after a
wall of tracebacks).

    with failures.StepLog(os.path.join(output, "pipeline.log")) as steps:
      try:
        pipeline(**arguments)
      except RuntimeError as e:
        raise steps.failure(e) from None    # StepFailed("step 'finetune' failed: ... (full log: ...)")

`StepLog` copies what the runner prints (each step's output, on stdout) and the runner's own log records into
the file, and keeps the last lines of the step that is running. It is independent of how the output is shown,
but it tells the steps apart by the runner's INFO records ("Executing task 'x'"): quieten the runner with
handler levels or filters, not by raising the root logger's level above INFO.
"""
from __future__ import annotations

import collections
import logging
import re
import sys

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '?([\w-]+)'?")
_FAILED = re.compile(r"Task '?([\w-]+)'? finished with status FAILURE")
# The last line of a Python traceback: `package.module.SomeError: message`.
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Failed|Diverged|Extra|Exit)\w*: (.+)$")
_ERROR = re.compile(r"\berror: (.+)$")
_KEPT_LINES = 400  # of the running step, to find its message in


class StepFailed(RuntimeError):
  """One step of the pipeline failed: `step`, its one-line `message`, the `log` file holding everything."""

  def __init__(self, step: str, message: str, log: str):
    super().__init__(f"step {step!r} failed: {message} (full log: {log})")
    self.step, self.message, self.log = step, message, log


def one_line(lines) -> str:
  """A step's own message from its output: the last exception line of a traceback (`XError: message`), else
  the last `error: ...` line, else the last line."""
  lines = [_ANSI.sub("", line).rstrip() for line in lines]
  lines = [line for line in lines if line.strip()]
  for pattern in (_EXCEPTION, _ERROR):
    for line in reversed(lines):
      if match := pattern.search(line.strip()):
        return match[1].strip()
  return lines[-1].strip() if lines else "(it printed nothing)"


class _Tee:
  def __init__(self, stream, log):
    self._stream, self._log = stream, log

  def write(self, text):
    self._log.write_output(text)
    return self._stream.write(text)

  def flush(self):
    self._stream.flush()

  def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
    return getattr(self._stream, name)


class StepLog(logging.Filter):
  """Context manager: while open, stdout and the root logger's records also go to `path`; `failure(error)`
  turns the runner's RuntimeError into StepFailed naming the step that failed."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path
    self.current: str | None = None
    self.failed: str | None = None
    self._lines: dict[str, collections.deque] = {}
    self._partial = ""

  def __enter__(self):
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
    self._stdout, sys.stdout = sys.stdout, _Tee(sys.stdout, self)
    logging.getLogger().addFilter(self)
    return self

  def __exit__(self, *exc):
    logging.getLogger().removeFilter(self)
    sys.stdout = self._stdout
    self._file.close()
    return False

  def filter(self, record):
    text = _ANSI.sub("", record.getMessage())
    self._file.write(text + "\n")
    if match := _STARTED.match(text):
      self.current = match[1]
      self._lines[self.current] = collections.deque(maxlen=_KEPT_LINES)
    elif match := _FAILED.match(text):
      self.failed = self.failed or match[1]  # the first failure: later ones follow from it
    elif self.current:
      self._lines[self.current].extend(text.splitlines())
    return True

  def write_output(self, text: str) -> None:
    self._file.write(text)
    if self.current is None:
      return
    *complete, self._partial = (self._partial + text).split("\n")
    self._lines[self.current].extend(complete)

  def failure(self, error: BaseException) -> BaseException:
    """StepFailed for the step that failed, or `error` itself when no step did (a failure of the runner)."""
    if self.failed is None:
      return error
    self._file.flush()
    return StepFailed(self.failed, one_line(self._lines.get(self.failed, ())), self.path)
