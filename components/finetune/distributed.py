"""Starting `jax.distributed` when a run spans several processes (hosts).

Sources, first match wins:
  1. explicit arguments (the CLI's --coordinator-address/--num-processes/--process-id; tests), or the
     environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
  2. Vertex AI custom jobs: CLUSTER_SPEC = {"cluster": {"workerpool0": ["host:port"], ...},
     "task": {"type": "workerpool0", "index": 0}} (the chief of workerpool0 coordinates, on the port
     Vertex lists for it: the one the job's replicas may reach each other on);
  3. multi-host TPU VMs and GKE TPU node pools (TPU_WORKER_HOSTNAMES lists several hosts): jax
     detects the cluster itself.
A single process needs none of this, and nothing is started.
"""
from __future__ import annotations

import json
import logging
import os

import jax

log = logging.getLogger(__name__)
_DEFAULT_PORT = 8476  # jax's own default, for a chief listed without a port


def _vertex_cluster() -> tuple[str, int, int] | None:
  spec = os.environ.get("CLUSTER_SPEC")
  if not spec:
    return None
  spec = json.loads(spec)
  pools = sorted(k for k in spec.get("cluster", {}) if k.startswith("workerpool"))
  hosts = [h for p in pools for h in spec["cluster"][p]]
  if len(hosts) <= 1:
    return None
  task = spec["task"]
  before = sum(len(spec["cluster"][p]) for p in pools if p < task["type"])
  chief, _, port = hosts[0].partition(":")
  return f"{chief}:{port or _DEFAULT_PORT}", len(hosts), before + int(task["index"])


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Calls `jax.distributed.initialize` when more than one process is configured; else does nothing."""
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  num_processes = num_processes or (int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None)
  if process_id is None and "JAX_PROCESS_ID" in env:
    process_id = int(env["JAX_PROCESS_ID"])
  if coordinator_address and num_processes and num_processes > 1:
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
  elif vertex := _vertex_cluster():
    kwargs = dict(zip(("coordinator_address", "num_processes", "process_id"), vertex))
  elif len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    kwargs = {}
  else:
    return
  log.info("starting jax.distributed %s", kwargs or "(cluster detected by jax)")
  jax.distributed.initialize(**kwargs)
