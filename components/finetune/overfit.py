"""One warning when the model learns its training examples rather than the task: validation loss well above
its own minimum while training loss kept falling, or far above training loss at the end of the run."""
from __future__ import annotations

from typing import NamedTuple

RISE = 1.25  # latest validation loss / its minimum
RATIO = 3.0  # final validation loss / final training loss
MIN_GAP = 0.5  # nats: near zero, ratios of small losses say nothing
ADVICE = ("train fewer steps or epochs, add data, or train fewer weights (config.trainable, LoRA); compare the "
          "tuned model's evaluation with the base model's")


class Point(NamedTuple):
  step: int
  train_loss: float  # mean over the steps just before the validation
  val_loss: float


def warning(history: list[Point]) -> str | None:
  """The warning for this run's validation history, or None."""
  if not history:
    return None
  last = history[-1]
  best = min(history, key=lambda p: p.val_loss)
  if (best.step < last.step and last.val_loss > RISE * best.val_loss and last.val_loss - best.val_loss > MIN_GAP
      and last.train_loss < best.train_loss):
    return (f"overfitting: validation loss rose from {best.val_loss:.3f} (step {best.step}) to {last.val_loss:.3f} "
            f"(step {last.step}) while training loss fell from {best.train_loss:.3f} to {last.train_loss:.3f}; "
            + ADVICE)
  if last.val_loss > RATIO * last.train_loss and last.val_loss - last.train_loss > MIN_GAP:
    return (f"overfitting: at step {last.step} validation loss {last.val_loss:.3f} is "
            f"{last.val_loss / max(last.train_loss, 1e-9):.0f}x the training loss {last.train_loss:.3f}: the model "
            "fits its training examples far better than new ones; " + ADVICE)
  return None
