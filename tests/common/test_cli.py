"""The command lines' shared behaviour (components/common/cli.py) and its use in every CLI: one-line errors with
exit status 2, deprecated spellings that still work and say so, help text on every flag, and `--help` that
imports no heavy module (jax, kfp, the cloud SDKs)."""
import json
import subprocess
import sys

import pytest

from components.common import cli

CLIS = ("components.convert", "components.download", "components.evaluate", "components.export",
        "components.finetune", "components.finetune.plan", "pipelines.local", "pipelines.compile",
        "pipelines.submit")
HEAVY = ("jax", "flax", "kfp", "torch", "transformers", "tensorflow", "google.cloud.storage",
         "google.cloud.aiplatform")


def parser_with_alias() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="tool")
  p.add_argument("--batch", type=int, required=True, deprecated=("--batch-size",), help="examples per step")
  p.add_argument("--num-processes", type=int, deprecated=("--num_processes",), help="processes")
  return p


def test_an_old_spelling_works_says_it_is_deprecated_and_is_not_in_help(capsys):
  args = parser_with_alias().parse_args(["--batch-size", "4", "--num_processes=2"])
  assert (args.batch, args.num_processes) == (4, 2)
  assert capsys.readouterr().err.splitlines() == ["tool: --batch-size is deprecated, use --batch",
                                                  "tool: --num_processes is deprecated, use --num-processes"]
  assert parser_with_alias().parse_args(["--batch", "8"]).batch == 8
  assert capsys.readouterr().err == ""  # the new spelling: no notice
  text = parser_with_alias().format_help()
  assert "--batch BATCH" in text and "--batch-size" not in text and "--num_processes" not in text


def test_a_mistake_is_one_line_and_exit_status_2(capsys):
  for argv, message in (([], "the following arguments are required: --batch"),  # required, though it has an alias
                        (["--batch", "x"], "argument --batch: invalid int value: 'x'"),
                        (["--batch", "1", "--nope"], "unrecognized arguments: --nope")):
    with pytest.raises(SystemExit) as exited:
      parser_with_alias().parse_args(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"tool: error: {message} (see --help)\n"
  assert cli.report("tool", "two\nlines") == 2 and capsys.readouterr().err == "tool: error: two lines\n"


def _parsers(module: str, monkeypatch) -> list:
  """The parsers a CLI builds (caught when it parses), subcommands' included."""
  import argparse
  import importlib

  class Built(Exception):
    pass

  def caught(self, args=None, namespace=None):
    raise Built(self)

  monkeypatch.setattr(cli.ArgumentParser, "parse_known_args", caught)
  monkeypatch.setattr("components.finetune.preemption.exit_on_sigterm", lambda: None)  # not in the test process
  main = importlib.import_module(module if module.endswith(".plan") else f"{module}.__main__"
                                 if module.startswith("components") else module).main
  with pytest.raises(Built) as built:
    main(["--help"])
  parsers = [built.value.args[0]]
  for action in parsers[0]._actions:
    if isinstance(action, argparse._SubParsersAction):
      parsers += list(action.choices.values())
  return parsers


@pytest.mark.parametrize("module", CLIS)
def test_every_flag_has_help_text(module, monkeypatch):
  import argparse

  for parser in _parsers(module, monkeypatch):
    assert isinstance(parser, cli.ArgumentParser), f"{module} does not use components.common.cli"
    missing = [a.option_strings[0] for a in parser._actions if a.option_strings and a.help is None]
    assert not missing, f"{parser.prog}: flags without help: {missing}"
    assert all(a.help == argparse.SUPPRESS for a in parser._actions if set(a.option_strings) & set(parser._deprecated))


def test_help_imports_no_heavy_module():
  """`--help` of every CLI, each in a fresh interpreter: what it imported (no wall-clock figure asserted)."""
  script = f"""
import contextlib, io, json, runpy, sys
module = sys.argv[1]
sys.argv = [module, "--help"]
with contextlib.redirect_stdout(io.StringIO()) as out:
  try:
    runpy.run_module(module, run_name="__main__")
  except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in {HEAVY!r}))
print(json.dumps({{"code": code, "heavy": heavy, "usage": out.getvalue().startswith("usage:")}}))
"""
  for module in CLIS:
    done = subprocess.run([sys.executable, "-c", script, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and result["usage"], (module, result)
    assert result["heavy"] == [], f"python -m {module} --help imported {result['heavy'][:5]}"


def test_finetune_overrides_are_set_and_the_old_spelling_says_so(tmp_path, capsys, monkeypatch):
  from components.finetune.__main__ import main

  monkeypatch.setattr("components.finetune.preemption.exit_on_sigterm", lambda: None)
  config = "components/finetune/configs/tiny_test.py"
  for argv, said in ((["--set", "lrr=1"], "--set lrr=1: unknown config key 'lrr' (did you mean 'optimizer.lr'?"),
                     (["--set", "optimizer.lrr=1"], "--set optimizer.lrr=1: unknown config key 'optimizer.lrr'"),
                     (["--set", "batch_size=x"], "--set batch_size=x: 'x' is not a valid int")):
    with pytest.raises(SystemExit) as exited:
      main(["--config", config, "--workdir", str(tmp_path / "w"), *argv])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith(f"python -m components.finetune: error: {said}"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "\"'" not in err
  with pytest.raises(SystemExit):
    main(["--config", config, "--workdir", str(tmp_path / "w"), "--config.lrr=1", "--num_processes", "1"])
  assert capsys.readouterr().err.splitlines() == [
      "python -m components.finetune: --num_processes is deprecated, use --num-processes",
      "python -m components.finetune: error: --config.lrr=1: unknown config key 'lrr' (did you mean 'optimizer.lr'? "
      "every key is declared in components/finetune/config.py defaults())"]
  assert not (tmp_path / "w").exists()  # nothing started


def test_old_spellings_of_evaluate_and_export(capsys):
  from components.evaluate.__main__ import build_parser as evaluate_parser
  from components.export.__main__ import build_parser as export_parser

  args = evaluate_parser().parse_args(["run", "--checkpoint", "c", "--data", "d", "--task", "detect", "--output", "o",
                                       "--batch-size", "4"])
  assert args.batch_size == 4
  assert export_parser().parse_args(["--checkpoint", "c", "--format", "hf", "--output", "o"]).format == "hf"
  assert capsys.readouterr().err.splitlines() == [
      "python -m components.evaluate run: --batch-size is deprecated, use --batch",
      "python -m components.export: --format is deprecated, use --export-format"]
  assert export_parser().parse_args(["--checkpoint", "c", "--export-format", "npz", "--output", "o"]).format == "npz"
  with pytest.raises(SystemExit):
    export_parser().parse_args(["--checkpoint", "c", "--output", "o"])
  assert "required: --export-format" in capsys.readouterr().err


def test_export_dry_run_warns_when_no_project_is_named(monkeypatch, caplog, capsys):
  from components.export import registry

  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  request = registry.upload_request(artifact_uri="gs://b/m", export_format="hf", display_name="m",
                                    serving_container=None, labels={})
  registry.register(request, dry_run=True)
  assert json.loads(capsys.readouterr().out)["kwargs"]["project"] is None
  assert "names no project (\"project\": null): give --project or set GOOGLE_CLOUD_PROJECT" in caplog.text
  caplog.clear()
  registry.register({**request, "project": "acme"}, dry_run=True)
  assert "no project" not in caplog.text
