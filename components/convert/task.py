"""What a KFP task of the convert step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.
"""
import json


def run_convert(input_uri: str, data_format: str, task: str, output_uri: str, classes: str = "",
                splits: str = "train=0.8,valid=0.1,test=0.1", seed: int = 0, strict: bool = False,
                workers: int = 0, max_side: int = 0, tokenizer_uri: str = "", text_len: int = 128,
                vqvae: str = "") -> str:
  """Runs the conversion with KFP-friendly scalar arguments ("" / 0 = default); returns the report as JSON.
  Task segment with `vqvae` "": the released mask codec, as the download step fetches it then.

  The output is the task's own artifact, which KFP publishes whole after the task: the plain layout
  (storage.py), without versions."""
  from components.common.checkpoints import RELEASED_VQVAE
  from components.convert.core import ConvertConfig, convert, parse_splits

  report = convert(ConvertConfig(
      input=input_uri, format=data_format, task=task, output=output_uri,
      classes=tuple(c.strip() for c in classes.split(",") if c.strip()) or None,
      splits=parse_splits(splits), seed=seed, strict=strict, workers=workers, max_side=max_side or None,
      tokenizer=tokenizer_uri or None, text_len=text_len, progress=False, layout="plain",
      vqvae=vqvae or (RELEASED_VQVAE if task == "segment" else None)))
  return json.dumps(report)
