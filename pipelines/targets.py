"""Where the pipeline runs: one table of named targets, looked up by `--target`.

A target says which platform orchestrates the DAG (the in-process KFP local runner, Vertex AI Pipelines,
or a KFP cluster on GKE), which container image family the steps use (cpu, gpu, tpu), and what hardware
the heavy steps (finetune, evaluate) get. Everything else reads these fields; nothing parses target names.

Vertex AI runs the heavy steps as custom jobs (google-cloud-pipeline-components'
`create_custom_training_job_from_component`): `machine_type` + `tpu_topology` for Cloud TPU VMs,
`machine_type` + `accelerator_type`/`accelerator_count` for GPUs, `hosts` replicas for multi-host slices.
KFP on GKE schedules the heavy steps on TPU or GPU node pools: node selectors
`cloud.google.com/gke-tpu-accelerator` / `gke-tpu-topology`, a toleration and a `google.com/tpu` limit.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  platform: str                   # "local" | "vertex" | "kfp"
  image_flavor: str               # "cpu" | "gpu" | "tpu": which images/Dockerfile.<flavor> the steps run in
  description: str
  machine_type: str = ""          # Vertex machine type of each host of the heavy steps
  accelerator_type: str = ""      # Vertex AcceleratorType enum name (GPUs), or the k8s resource name (KFP)
  accelerator_count: int = 0      # accelerators per host
  tpu_topology: str = ""          # the whole slice, e.g. "2x2", "4x4", "2x2x1"
  hosts: int = 1                  # replicas of finetune; > 1 means multi-host jax.distributed
  host_topology: str = ""         # one host's share of a multi-host slice: where evaluate runs
  gke_tpu_accelerator: str = ""   # value of the node label cloud.google.com/gke-tpu-accelerator

  @property
  def is_tpu(self) -> bool:
    return self.image_flavor == "tpu"

  @property
  def chips(self) -> int:
    return self.accelerator_count * self.hosts

  def single_host(self) -> "Target":
    """Where evaluate runs: decoding fits one host, and a single-process evaluation is simpler to trust."""
    if self.hosts == 1:
      return self
    return dataclasses.replace(self, hosts=1, tpu_topology=self.host_topology or self.tpu_topology)


def _vertex_tpu(name, machine_type, chips_per_host, topology, hosts=1, host_topology=""):
  return Target(
      name=f"vertex-tpu-{name}", platform="vertex", image_flavor="tpu",
      description=f"Vertex AI custom jobs on Cloud TPU {name} ({topology}, {hosts} host{'s' * (hosts > 1)})",
      machine_type=machine_type, accelerator_count=chips_per_host, tpu_topology=topology, hosts=hosts,
      host_topology=host_topology)


def _vertex_gpu(name, machine_type, accelerator, count):
  return Target(
      name=f"vertex-gpu-{name}", platform="vertex", image_flavor="gpu",
      description=f"Vertex AI custom jobs on {machine_type} with {count}x {accelerator}",
      machine_type=machine_type, accelerator_type=accelerator, accelerator_count=count)


def _gke_tpu(name, gke_accelerator, chips, topology):
  # One pod per step: GKE single-host slices only (multi-host slices need a JobSet, which KFP does not make).
  return Target(
      name=f"kfp-gke-tpu-{name}", platform="kfp", image_flavor="tpu",
      description=f"KFP on GKE, TPU {name} node pool ({gke_accelerator}, {topology})",
      accelerator_type="google.com/tpu", accelerator_count=chips, tpu_topology=topology,
      gke_tpu_accelerator=gke_accelerator)


_TARGETS = [
    Target(name="local", platform="local", image_flavor="cpu",
           description="in-process KFP local runner on this machine's CPU or local GPU"),
    # Cloud TPU VM machine types for Vertex AI training: ct5lp (v5e), ct6e (v6e), ct5p (v5p).
    _vertex_tpu("v5e-1", "ct5lp-hightpu-1t", 1, "1x1"),
    _vertex_tpu("v5e-4", "ct5lp-hightpu-4t", 4, "2x2"),
    _vertex_tpu("v5e-8", "ct5lp-hightpu-8t", 8, "2x4"),
    _vertex_tpu("v5e-16", "ct5lp-hightpu-4t", 4, "4x4", hosts=4, host_topology="2x2"),
    _vertex_tpu("v5e-32", "ct5lp-hightpu-4t", 4, "4x8", hosts=8, host_topology="2x2"),
    _vertex_tpu("v6e-1", "ct6e-standard-1t", 1, "1x1"),
    _vertex_tpu("v6e-4", "ct6e-standard-4t", 4, "2x2"),
    _vertex_tpu("v6e-8", "ct6e-standard-8t", 8, "2x4"),
    _vertex_tpu("v6e-16", "ct6e-standard-4t", 4, "4x4", hosts=4, host_topology="2x2"),
    _vertex_tpu("v5p-8", "ct5p-hightpu-4t", 4, "2x2x1"),
    _vertex_tpu("v5p-16", "ct5p-hightpu-4t", 4, "2x2x2", hosts=2, host_topology="2x2x1"),
    _vertex_gpu("l4", "g2-standard-12", "NVIDIA_L4", 1),
    _vertex_gpu("l4x4", "g2-standard-48", "NVIDIA_L4", 4),
    _vertex_gpu("a100", "a2-highgpu-1g", "NVIDIA_TESLA_A100", 1),
    _vertex_gpu("a100-80gb", "a2-ultragpu-1g", "NVIDIA_A100_80GB", 1),
    _vertex_gpu("h100", "a3-highgpu-8g", "NVIDIA_H100_80GB", 8),
    _vertex_gpu("h200", "a3-ultragpu-8g", "NVIDIA_H200_141GB", 8),
    _gke_tpu("v5e-1", "tpu-v5-lite-podslice", 1, "1x1"),
    _gke_tpu("v5e-4", "tpu-v5-lite-podslice", 4, "2x2"),
    _gke_tpu("v5e-8", "tpu-v5-lite-podslice", 8, "2x4"),
    _gke_tpu("v6e-4", "tpu-v6e-slice", 4, "2x2"),
    _gke_tpu("v6e-8", "tpu-v6e-slice", 8, "2x4"),
    _gke_tpu("v5p-8", "tpu-v5p-slice", 4, "2x2x1"),
    _gke_tpu("v4-8", "tpu-v4-podslice", 4, "2x2x1"),
    Target(name="kfp-gpu", platform="kfp", image_flavor="gpu",
           description="KFP on any Kubernetes cluster with one NVIDIA GPU per heavy step",
           accelerator_type="nvidia.com/gpu", accelerator_count=1),
    Target(name="kfp-cpu", platform="kfp", image_flavor="cpu",
           description="KFP on any Kubernetes cluster, CPU only (smoke tests)"),
]
TARGETS: dict[str, Target] = {t.name: t for t in _TARGETS}


def get_target(name: str) -> Target:
  try:
    return TARGETS[name]
  except KeyError:
    raise ValueError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}") from None
