"""`python -m components.evaluate score`: files in, metrics out (stdout, and OUT/ with --output)."""
import json
import subprocess
import sys

import pytest

from components.evaluate.__main__ import main

REFS = [{"image": "images/a.png", "prefix": "ocr", "suffix": "HELLO"},
        {"image": "images/b.png", "prefix": "ocr", "suffix": "WORLD 42"}]
PREDS = [{"image": "images/a.png", "prefix": "ocr", "prediction": "HELLO"},
         {"image": "images/b.png", "prefix": "ocr", "prediction": "W0RLD 42"}]


def write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_score_prints_metrics_and_writes_a_report(tmp_path, capsys, make_dataset):
  data = make_dataset(tmp_path / "data", REFS)
  preds = write(tmp_path / "preds.jsonl", PREDS)
  out = tmp_path / "out"
  assert main(["score", "--task", "ocr", "--predictions", preds, "--references", f"{data}/valid.jsonl",
               "--output", str(out)]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed["exact_match"] == 0.5 and printed["cer"] == 1 / 13
  assert json.loads((out / "metrics.json").read_text()) == printed
  assert (out / "report.html").read_text().count("data:image/jpeg;base64,") == 2  # images found beside refs
  assert [json.loads(line)["prediction"] for line in (out / "predictions.jsonl").read_text().splitlines()] == \
      ["HELLO", "W0RLD 42"]


def test_bad_input_names_the_file_and_line(tmp_path):
  refs = write(tmp_path / "refs.jsonl", REFS)
  preds = tmp_path / "preds.jsonl"
  preds.write_text(json.dumps(PREDS[0]) + "\n" + '{"image": "images/b.png", "prefix": "ocr"}\n')
  result = subprocess.run([sys.executable, "-m", "components.evaluate", "score", "--task", "ocr", "--predictions",
                           str(preds), "--references", refs], capture_output=True, text=True)
  assert result.returncode != 0
  assert f"{preds}, line 2: missing key(s) ['prediction']" in result.stderr


def test_help():
  result = subprocess.run([sys.executable, "-m", "components.evaluate", "run", "--help"], capture_output=True, text=True)
  assert result.returncode == 0 and "--baseline" in result.stdout and "--sampler" in result.stdout


def test_score_help_names_every_file_output_writes(capsys):
  with pytest.raises(SystemExit):
    main(["score", "--help"])
  help_text = " ".join(capsys.readouterr().out.split())
  assert "predictions.jsonl, metrics.json, report.html and (detect) coco_results.json" in help_text
