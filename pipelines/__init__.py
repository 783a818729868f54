"""The Kubeflow pipeline around the steps: one DAG, many targets, run locally, on Vertex AI or on KFP.

    python -m pipelines.local                                   # the whole DAG offline (docs/PIPELINES.md)
    python -m pipelines.compile --target vertex-tpu-v5e-8 --output pipeline.yaml
    python -m pipelines.submit --target ... --project P --pipeline-root gs://... [--schedule CRON] [--dry-run]

    from pipelines.dag import build_pipeline                    # the @dsl.pipeline for a target
    from pipelines import TARGETS, get_target, HEADLINE_METRIC

Modules: `targets` (the target table), `dag` (the DAG), `steps` (its components: the steps' own from
`components/<step>/component.py`, plus fingerprint, champion, rescore, gate and promote), `gate` +
`champion` (promotion), `listing` (the dataset listing's fingerprint, convert's cache key), `runtime`
(kfp-free helpers of the component bodies), `images` (step images pinned to the package version),
`local`/`synthetic`/`local_demo` (the offline demo), `compile`, `submit`, `kfp_local_fix` (KFP
local-runner fixes). Importing this package does not import kfp.
"""
from pipelines.gate import HEADLINE_METRIC
from pipelines.targets import TARGETS, Target, get_target

__all__ = ["HEADLINE_METRIC", "TARGETS", "Target", "get_target"]
