"""Redaction: registered secrets and signed-URL parameters never reach a log line or an error."""
import logging

from components.download import secrets


def test_redacts_registered_values_and_signed_url_parameters(monkeypatch, tmp_path):
  token_file = tmp_path / "token"
  token_file.write_text("kgat_from_a_file_123\n")
  monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file))
  monkeypatch.setenv("HF_TOKEN", "hf_env_token_456")
  secrets.register_environment()
  text = ("GET https://storage.googleapis.com/b/o?X-Goog-Signature=abc123&X-Goog-Credential=svc%40p&alt=media "
          "with kgat_from_a_file_123 and hf_env_token_456; sig=zzz https://x/y?sig=s1gn3d&v=2")
  redacted = secrets.redact(text)
  for leaked in ("abc123", "svc%40p", "kgat_from_a_file_123", "hf_env_token_456", "s1gn3d"):
    assert leaked not in redacted
  assert "alt=media" in redacted and "v=2" in redacted  # ordinary parameters stay readable


def test_log_filter(caplog):
  secrets.register("a-registered-secret-789")
  logger = logging.getLogger("test.download.secrets")
  caplog.handler.addFilter(secrets.RedactingFilter())
  with caplog.at_level(logging.INFO):
    logger.info("using %s at %s", "a-registered-secret-789", "https://h/p?token=t0k3n")
  assert "a-registered-secret-789" not in caplog.text and "t0k3n" not in caplog.text
  assert "using *** at https://h/p?token=***" in caplog.text
