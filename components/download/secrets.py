"""Keeps credentials out of logs and error messages.

Credentials reach the clients only through the environment or mounted files, never through arguments we
log or write. As a second line of defence every known secret value, and the signature or token parameters
of signed URLs (Kaggle redirects to them), are replaced by `***` in log records and in the error the CLI
prints.
"""
from __future__ import annotations

import logging
import os
import re
import sys

SECRET_ENV_VARS = ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_MIN_SECRET_LEN = 6  # shorter values would redact ordinary words
_secrets: set[str] = set()
_URL_SECRET_PARAM = re.compile(r"([?&][\w.-]*(?:sig|signature|token|key|credential)[\w.-]*=)[^&\s'\"]+", re.IGNORECASE)


def register(value: str | None) -> None:
  if value and len(value) >= _MIN_SECRET_LEN:
    _secrets.add(value)


def register_environment() -> None:
  for var in SECRET_ENV_VARS:
    value = os.environ.get(var)
    if var == "KAGGLE_API_TOKEN" and value and os.path.isfile(value):  # kagglesdk accepts a path to the token
      with open(value) as f:
        value = f.read().strip()
    register(value)


def redact(text: str) -> str:
  for value in sorted(_secrets, key=len, reverse=True):
    text = text.replace(value, "***")
  return _URL_SECRET_PARAM.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
  """Rewrites a record's message with every registered secret replaced by `***`."""

  def filter(self, record: logging.LogRecord) -> bool:
    record.msg, record.args = redact(record.getMessage()), None
    return True


def install_log_redaction() -> None:
  """Adds the redacting filter to the handlers of the root logger and of kagglehub (which prints to
  stdout through its own handler). Call after logging is configured."""
  for name in ("", "kagglehub"):
    for handler in logging.getLogger(name).handlers:
      handler.addFilter(RedactingFilter())


def configure_logging() -> None:
  """INFO logs on stderr with every secret known from the environment redacted (CLI and component)."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
  register_environment()
  install_log_redaction()
