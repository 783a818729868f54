"""Multi-host start-up from Vertex AI's CLUSTER_SPEC (the environment a custom job's replicas get)."""
import json
import os
import socket
import subprocess
import sys

import pytest

from components.finetune import distributed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cluster_spec(pools: dict, task_type: str, index: int) -> str:
  return json.dumps({"cluster": pools, "task": {"type": task_type, "index": index}, "job": "{}"})


def test_process_ids_count_across_worker_pools_from_the_chief(monkeypatch):
  pools = {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
           "workerpool1": ["cmle-training-workerpool1-ab-0:2222", "cmle-training-workerpool1-ab-1:2222"]}
  expected = {("workerpool0", 0): 0, ("workerpool1", 0): 1, ("workerpool1", 1): 2}
  for (pool, index), process_id in expected.items():
    monkeypatch.setenv("CLUSTER_SPEC", cluster_spec(pools, pool, index))
    assert distributed._vertex_cluster() == ("cmle-training-workerpool0-ab-0:2222", 3, process_id)


def test_one_replica_or_no_spec_starts_nothing(monkeypatch):
  monkeypatch.delenv("CLUSTER_SPEC", raising=False)
  assert distributed._vertex_cluster() is None
  monkeypatch.setenv("CLUSTER_SPEC", cluster_spec({"workerpool0": ["host-0:2222"]}, "workerpool0", 0))
  assert distributed._vertex_cluster() is None


@pytest.mark.slow  # two fresh interpreters importing jax
def test_two_replicas_join_one_jax_cluster_from_cluster_spec_alone():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  pools = {"workerpool0": [f"127.0.0.1:{port}"], "workerpool1": [f"127.0.0.1:{port + 1}"]}
  script = ("import jax, json; from components.finetune import distributed; distributed.initialize(); "
            "print(json.dumps([jax.process_index(), jax.process_count(), jax.device_count()]))")
  procs = []
  for pool in ("workerpool0", "workerpool1"):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "CLUSTER_SPEC": cluster_spec(pools, pool, 0)}
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "TPU_WORKER_HOSTNAMES"):
      env.pop(key, None)
    procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  results = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  assert results == [[0, 2, 4], [1, 2, 4]]  # one cluster: 2 processes x 2 local devices
