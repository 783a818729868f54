"""SIGTERM (preemption), from process start to exit.

Two phases, one signal:
- start-up (`exit_on_sigterm`, installed first thing by the CLI and the KFP task): the process stops at
  once with exit code 143 and one line. Deferring to the first checkpoint would gain nothing (before the
  first step there is nothing newer than the last checkpoint to save) and could outlast the grace period a
  preempted VM gets (~30 s on GCE), since start-up includes compilation and the restore.
- the training loop (`Preemption`): SIGTERM only sets a flag; the loop checks it after each step, saves a
  checkpoint and returns "preempted" (the CLI exits 143: rerun to resume).
"""
from __future__ import annotations

import logging
import os
import signal
import sys

EXIT_CODE = 143  # 128 + SIGTERM: what schedulers expect of a process stopped by SIGTERM

log = logging.getLogger("components.finetune")


def _stop_during_start_up(signum, frame):
  del signum, frame
  log.warning("SIGTERM during start-up, before the first training step: stopping (nothing new to save); rerun "
              "the same command to resume")
  # os._exit, not SystemExit: an exception raised by a signal handler is swallowed when the signal lands
  # in a gc callback or a __del__ (seen with jax's `_xla_gc_callback`), and start-up would carry on into
  # training. Before the first step nothing needs unwinding: every write is atomic.
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(EXIT_CODE)


def exit_on_sigterm() -> None:
  """From now until the training loop takes over, SIGTERM exits 143 with one line (see the module note)."""
  try:
    signal.signal(signal.SIGTERM, _stop_during_start_up)
  except ValueError:  # not the main thread (a notebook worker): leave the signal alone
    pass


class Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (the handler itself does nothing risky)."""

  def __init__(self):
    self.requested = False
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside a notebook worker): no preemption hook
      self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self, step: int) -> bool:
    del step
    import jax  # imported here: the start-up half of this module must not wait for jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
      return self.requested
    # Every host must stop at the same step; one small all-reduce of the flags.
    return bool(np.max(multihost_utils.process_allgather(np.int32(self.requested))))
