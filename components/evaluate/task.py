"""What a KFP task of the evaluate step runs: the core called with the component's plain parameters.

Kept apart from component.py, which builds the component with `kfp.dsl` at import: KFP's executor
imports a reduced `kfp.dsl` without `component`, so the component body must not import that module.
"""

def run_evaluate(checkpoint: str, data_dir: str, task: str, output_dir: str, split: str = "valid",
                 sampler: str = "greedy", max_decode_len: int = 0, limit: int = 0, batch_size: int = 8,
                 baseline_dir: str = "", which: str = "latest", prompt_len: int = 0, seed: int = 0,
                 run_id: str = "", vqvae: str = "") -> dict:
  """`evaluate run` with KFP-friendly scalar arguments (0 / "" = default); returns the metrics."""
  from components.evaluate import runner

  return runner.run(runner.RunArgs(
      checkpoint=checkpoint, data=data_dir, task=task, output=output_dir, split=split, sampler=sampler or "greedy",
      max_decode_len=max_decode_len or None, limit=limit or None, batch_size=batch_size,
      baseline=baseline_dir or None, which=which or "latest", prompt_len=prompt_len or None, seed=seed,
      run_id=run_id or None, vqvae=vqvae or None))


def scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
  """The numbers of a (possibly nested) metrics dict, flattened with "/" so KFP `Metrics` can show them."""
  flat = {}
  for key, value in metrics.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(scalar_metrics(value, prefix=f"{name}/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[name] = float(value)
  return flat
