"""One-line messages for the storage errors a user can fix: a full disk, a missing permission, a read-only
file system. The CLIs print them instead of a traceback:

    error: no space left on the device at /data/out/images/a.jpg: free some space or use another location
"""
from __future__ import annotations

import errno
import os

_REASONS = {
    errno.ENOSPC: ("no space left on the device", "free some space or use another location"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, raise the quota or use another location"),
    errno.EACCES: ("permission denied", "fix the permissions or use another location"),
    errno.EPERM: ("operation not permitted", "fix the permissions or use another location"),
    errno.EROFS: ("read-only file system", "use a writable location"),
}
_STRERROR = {code: os.strerror(code) for code in _REASONS}  # "No space left on device", ...


def _causes(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def storage_error(error: BaseException, where: str) -> str | None:
  """The one-line message for `error` (or an error it was raised from), naming the file it names, else
  `where`; None when it is no storage error. Errors that carry only text (TensorStore's, raised through
  orbax) are recognised by the system's wording."""
  for cause in _causes(error):
    if isinstance(cause, OSError) and cause.errno in _REASONS:
      reason, fix = _REASONS[cause.errno]
      path = cause.filename or where
      return f"{reason} at {path}: {fix}"
  for cause in _causes(error):
    text = str(cause)
    for code, (reason, fix) in _REASONS.items():
      if _STRERROR[code] in text:
        return f"{reason} at {where}: {fix}"
  return None

