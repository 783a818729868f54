"""The DAG: download -> convert -> finetune -> evaluate (base, tuned, champion) -> gate -> [export -> promote].

One definition for every target; `build_pipeline(target)` only changes where the heavy steps (finetune,
evaluate, rescore) run — see `pipelines.targets` — and which container image the steps use. The steps are
their own KFP components (`components/<step>/component.py`), bound to that image by `pipelines.steps`.

    download ────────────────────┬──> evaluate(base) ──┬──────────────> gate ──[passed]──> export ──> promote
    fingerprint ──> convert ──┬──┴──> finetune ──> evaluate(tuned) <─┘ baseline ──┘  │          (champion record,
    champion ─────────────────┴──> rescore (champion's model on this split) ──────────┘           if unchanged)

(convert's dataset feeds all three evaluations, so base, tuned and champion are scored on the same split.)

Caching (docs/PIPELINES.md, "What is cached and why"): `fingerprint` (the dataset listing), `champion`
(reads the record), `gate`, `export` and `promote` (write outside the pipeline root) never come from the
cache; convert's cache key holds the listing's fingerprint, so it re-runs when the files change, and every
step downstream of a new dataset re-runs because its input artifact is new.
"""
# (No `from __future__ import annotations`: KFP reads the pipeline signature's annotations as types.)

import copy
from typing import Optional

from kfp import dsl, kubernetes
from kfp.dsl import Artifact

from pipelines import images, steps
from pipelines.targets import Target

PIPELINE_NAME = "paligemma-finetune"
# Kubernetes secret (KFP targets) whose keys become the download step's environment; its values never
# enter the compiled pipeline. `infra/README.md` shows how to create it.
CREDENTIALS_SECRET = "paligemma-credentials"
CREDENTIAL_ENV = ("KAGGLE_USERNAME", "KAGGLE_KEY", "HF_TOKEN")
# CPU and memory of the light steps on cloud targets (Vertex picks a machine that has them).
# Spot/preempted TPU hosts: the trainer checkpoints on SIGTERM and a retry continues in the same workdir.
FINETUNE_RETRIES = 2
LIGHT_STEP_RESOURCES = {"download": ("4", "32G"), "convert": ("8", "32G"), "export": ("8", "64G")}


def _vertex_custom_job(component, target: Target):
  """`component` as a Vertex AI custom job on the target's machines (one replica per host)."""
  from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

  job = create_custom_training_job_from_component(
      component, display_name=component.component_spec.name, replica_count=target.hosts,
      machine_type=target.machine_type, accelerator_type=target.accelerator_type,
      accelerator_count=target.accelerator_count or 1)
  if target.tpu_topology:
    # GCPC has no topology argument; MachineSpec.tpu_topology is what Vertex reads for TPU VM slices.
    pools = copy.deepcopy(job.component_spec.inputs["worker_pool_specs"].default)
    for pool in pools:
      pool["machine_spec"]["tpu_topology"] = target.tpu_topology
    job.component_spec.inputs["worker_pool_specs"].default = pools
  return job


def _place_on_kfp(task, target: Target) -> None:
  """Resource limits, node selectors and tolerations that put a heavy step on the target's nodes."""
  if not target.accelerator_type:
    return
  task.set_accelerator_type(target.accelerator_type).set_accelerator_limit(target.accelerator_count)
  kubernetes.add_toleration(task, key=target.accelerator_type, operator="Exists", effect="NoSchedule")
  if target.is_tpu:
    kubernetes.add_node_selector(task, "cloud.google.com/gke-tpu-accelerator", target.gke_tpu_accelerator)
    kubernetes.add_node_selector(task, "cloud.google.com/gke-tpu-topology", target.tpu_topology)


def _uncached(task):
  """A step whose result depends on state outside its inputs (the dataset prefix's listing, the champion
  record) or that changes such state: never served from the cache (submit keeps this compiled setting)."""
  return task.set_caching_options(False)


def todays_dataset(ops, *, dataset_uri, dataset_format, task, classes, splits, seed, vqvae="",
                   light=lambda task, step: task):
  """fingerprint (uncached: lists the prefix) -> convert (cached by that fingerprint). Returns convert.
  `vqvae`: segment's mask codec ("" = the released one), which writes the <seg> tokens."""
  listing = _uncached(ops.fingerprint(dataset_uri=dataset_uri))
  listing.set_display_name("list dataset files")
  convert = light(ops.convert(input_uri=dataset_uri, data_format=dataset_format, task=task, classes=classes,
                              splits=splits, seed=seed, source_fingerprint=listing.output, vqvae=vqvae), "convert")
  convert.set_display_name("convert dataset")
  return convert


def champion_to_beat(ops, rescore_op, *, task, champion_uri, export_uri, rebaseline, evaluation,
                     heavy=lambda task: task):
  """champion (uncached: reads the record) -> rescore: its model on this run's split, with `evaluation`, the
  settings the base and tuned models are evaluated with. Returns (champion task, rescore task)."""
  current = _uncached(ops.champion(task=task, champion_uri=champion_uri, export_uri=export_uri,
                                   rebaseline=rebaseline))
  current.set_display_name("read champion record")
  rescored = heavy(rescore_op(model_uri=current.outputs["model_uri"], **evaluation))
  rescored.set_display_name("evaluate champion on this split")
  return current, rescored


def gate_and_promote(ops, *, task, base_evaluation, tuned_evaluation, champion, champion_evaluation, tuned_model,
                     export_uri, min_metric, min_improvement, export_format, export_dtype, register, base_model,
                     dataset_uri, light=lambda task, step: task):
  """gate -> [passed] export -> record champion. Returns the gate task (its `decision` says why).

  `champion` is the champion step's JSON (record, location, generation), `champion_evaluation` the rescore
  step's evaluation (the champion on this run's split, and which split that is)."""
  decision = _uncached(ops.gate(task=task, base_evaluation=base_evaluation, tuned_evaluation=tuned_evaluation,
                                champion_evaluation=champion_evaluation, champion=champion,
                                min_metric=min_metric, min_improvement=min_improvement))
  decision.set_display_name("gate: beats the champion?")
  with dsl.If(decision.outputs["passed"] == True, name="promoted"):  # noqa: E712 (a KFP condition)
    exported = _uncached(light(ops.export(model=tuned_model, evaluation=tuned_evaluation, export_uri=export_uri,
                                          export_format=export_format, dtype=export_dtype, register=register,
                                          run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), "export"))
    exported.set_display_name("export")
    _uncached(ops.promote(exported=exported.outputs["exported"], decision=decision.outputs["decision"], task=task,
                          run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, base_model=base_model,
                          dataset_uri=dataset_uri)).set_display_name("record champion")
  return decision


def build_pipeline(where: Target, registry: str = images.LOCAL_REGISTRY):
  """The pipeline function for target `where`, its steps in `registry`'s image of the target's flavor."""
  ops = steps.make_components(images.image_uri(where.image_flavor, registry))
  finetune_op, evaluate_op, rescore_op = ops.finetune, ops.evaluate, ops.rescore
  if where.platform == "vertex":
    finetune_op = _vertex_custom_job(ops.finetune, where)
    evaluate_op = _vertex_custom_job(ops.evaluate, where.single_host())
    rescore_op = _vertex_custom_job(ops.rescore, where.single_host())

  def heavy(task):
    if where.platform == "kfp":
      _place_on_kfp(task, where)
    return task

  def light(task, step):
    if where.platform != "local" and step in LIGHT_STEP_RESOURCES:
      cpu, memory = LIGHT_STEP_RESOURCES[step]
      task.set_cpu_limit(cpu).set_memory_limit(memory)
    return task

  def vertex_args(service_account):
    return {"service_account": service_account} if where.platform == "vertex" else {}

  @dsl.pipeline(name=PIPELINE_NAME, description=f"Fine-tune PaliGemma and promote it if it wins ({where.name})")
  def paligemma_finetune(
      dataset_uri: str,
      model: str = "paligemma2-3b-pt-224",
      model_source: str = "",
      tokenizer: str = "",
      vqvae: str = "",  # task segment: the mask codec's URI ("" = the released vae-oid.npz)
      model_dtype: str = "bfloat16",
      dataset_format: str = "coco",
      task: str = "detect",
      classes: str = "",
      splits: str = "train=0.8,valid=0.1,test=0.1",
      seed: int = 0,
      finetune_config: str = "notebook_attention_sgd",
      trainable: Optional[str] = None,  # None: the finetune config's value
      total_steps: Optional[int] = None,  # total_steps and epochs replace each other
      epochs: Optional[float] = None,
      batch_size: Optional[int] = None,
      lr: Optional[float] = None,
      text_len: Optional[int] = None,
      finetune_overrides: list = [],  # noqa: B006 (KFP reads the default; it is never mutated)
      eval_split: str = "valid",
      sampler: str = "greedy",
      max_decode_len: int = 0,
      eval_limit: int = 0,
      eval_batch_size: int = 8,
      champion_uri: str = "",
      min_metric: float = 0.0,
      min_improvement: float = 0.0,
      rebaseline: bool = False,
      export_uri: str = "",
      export_format: str = "npz",
      export_dtype: str = "",
      register: bool = False,
      service_account: str = "",
      target: str = where.name,  # recorded with the run; the placement itself is compiled in
  ) -> Artifact:
    del target
    # Task segment: the mask codec comes with the model (model.json `vqvae`), where evaluate and export find it.
    download = light(ops.download(model=model, source=model_source, tokenizer=tokenizer, dtype=model_dtype,
                                  task=task, vqvae=vqvae), "download")
    if where.platform == "kfp":
      kubernetes.use_secret_as_env(download, secret_name=CREDENTIALS_SECRET, optional=True,
                                   secret_key_to_env={name: name for name in CREDENTIAL_ENV})
    download.set_display_name("download weights")
    convert = todays_dataset(ops, dataset_uri=dataset_uri, dataset_format=dataset_format, task=task,
                             classes=classes, splits=splits, seed=seed, vqvae=vqvae, light=light)

    finetune = heavy(finetune_op(
        base_model=download.outputs["model_dir"], dataset=convert.outputs["dataset"], config=finetune_config,
        trainable=trainable, total_steps=total_steps, epochs=epochs, batch_size=batch_size, lr=lr,
        text_len=text_len, seed=seed, overrides=finetune_overrides, **vertex_args(service_account)))
    finetune.set_display_name("finetune")
    if where.platform != "local":
      finetune.set_retry(num_retries=FINETUNE_RETRIES)  # a retried task resumes from its own checkpoints

    evaluation = dict(dataset=convert.outputs["dataset"], task=task, split=eval_split, sampler=sampler,
                      max_decode_len=max_decode_len, limit=eval_limit, batch_size=eval_batch_size,
                      **vertex_args(service_account))
    base_eval = heavy(evaluate_op(model=download.outputs["model_dir"], **evaluation))
    base_eval.set_display_name("evaluate base model")
    # The run id only in the tuned report's header: the base evaluation's inputs stay the same from run to
    # run, so that KFP can reuse it from the cache.
    tuned_eval = heavy(evaluate_op(model=finetune.outputs["tuned_model"], baseline=base_eval.outputs["evaluation"],
                                   run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, **evaluation))
    tuned_eval.set_display_name("evaluate tuned model")
    current, champion_eval = champion_to_beat(ops, rescore_op, task=task, champion_uri=champion_uri,
                                              export_uri=export_uri, rebaseline=rebaseline, evaluation=evaluation,
                                              heavy=heavy)

    decision = gate_and_promote(
        ops, task=task, base_evaluation=base_eval.outputs["evaluation"],
        tuned_evaluation=tuned_eval.outputs["evaluation"], champion=current.outputs["champion"],
        champion_evaluation=champion_eval.outputs["evaluation"], tuned_model=finetune.outputs["tuned_model"],
        export_uri=export_uri, min_metric=min_metric, min_improvement=min_improvement,
        export_format=export_format, export_dtype=export_dtype, register=register, base_model=model,
        dataset_uri=dataset_uri, light=light)
    return decision.outputs["decision"]

  return paligemma_finetune
