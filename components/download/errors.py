"""The download step's errors: each message says what went wrong and what to do."""

RETRIES = 3  # attempts per file on checksum or transient errors (the CLI's --retries default)


class DownloadError(RuntimeError):
  """A download that cannot succeed as asked (access refused, not found, bad input)."""


class ChecksumError(DownloadError):
  """Bytes that do not match their checksum; retried before it reaches the user."""


class TransientError(DownloadError):
  """A temporary failure at the source (HTTP 429 or 5xx); retried before it reaches the user."""
