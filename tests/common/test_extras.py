"""What only some users need comes with an extra; without it, the feature says in one line what to install."""
import sys

import pytest

from components.common import extras


def test_require_names_the_extra_in_one_line():
  assert extras.require("json", extra="hf", needed_by="x") is sys.modules["json"]
  with pytest.raises(extras.MissingExtra) as caught:
    extras.require("no_such_module_for_this_test", extra="hf-data", needed_by="the Hugging Face dataset reader")
  message = str(caught.value)
  assert "\n" not in message and isinstance(caught.value, ImportError)
  assert message.endswith("needs the 'hf-data' extra (no_such_module_for_this_test is not installed): "
                          "pip install 'paligemma-pipelines[hf-data]'")


@pytest.fixture
def without(monkeypatch):
  """Makes `import NAME` fail as it does when the package is not installed."""
  def hide(*names):
    for name in names:
      monkeypatch.setitem(sys.modules, name, None)
  return hide


def test_export_hf_without_transformers_prints_the_extra_before_reading_anything(without, tmp_path, capsys):
  from components.export.__main__ import main

  without("transformers")
  code = main(["--checkpoint", str(tmp_path / "missing"), "--export-format", "hf", "--output", str(tmp_path / "out")])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1
  assert err.startswith("python -m components.export: error: export --export-format hf") and "pip install 'paligemma-pipelines[hf]'" in err
  assert not (tmp_path / "out").exists()


def test_caption_scoring_without_pycocoevalcap_names_the_caption_extra(without):
  from components.evaluate import text

  without("pycocoevalcap", "pycocoevalcap.cider", "pycocoevalcap.cider.cider")
  with pytest.raises(extras.MissingExtra, match=r"pip install 'paligemma-pipelines\[caption\]'"):
    text.cider(["a cat"], [["a cat"]])


def test_hf_dataset_reader_without_datasets_names_the_hf_data_extra(without, tmp_path):
  from components.convert.readers import hf

  without("datasets")
  with pytest.raises(extras.MissingExtra, match=r"pip install 'paligemma-pipelines\[hf-data\]'"):
    hf.read(str(tmp_path), "caption", str(tmp_path / "scratch"))
