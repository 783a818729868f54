"""Every target compiles to a valid PipelineSpec that asks for its hardware and holds no secret."""
import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import images
from pipelines.compile import compile_pipeline, load_documents, main as compile_main
from pipelines.targets import TARGETS, get_target

REGISTRY = "europe-west4-docker.pkg.dev/acme-ml/paligemma"
# Credentials a user has in their shell while compiling; none may end up in a pipeline package.
SECRETS = {
    "KAGGLE_USERNAME": "kaggle-user-7f3a0c",
    "KAGGLE_KEY": "kaggle-key-9c1e55d02b",
    "HF_TOKEN": "hf_tok_2b8d41e6aa",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/adc-6a0f91.json",
}
HEAVY = ("finetune", "evaluate", "evaluate-2", "rescore")  # rescore: the champion's model on this run's split


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """{target: (yaml text, pipeline spec dict, platform spec dict or None)}, compiled with secrets set."""
  out = tmp_path_factory.mktemp("compiled")
  with pytest.MonkeyPatch.context() as mp:
    for name, value in SECRETS.items():
      mp.setenv(name, value)
    result = {}
    for name in TARGETS:
      path = compile_pipeline(name, str(out / f"{name}.yaml"), REGISTRY)
      with open(path) as f:
        text = f.read()
      result[name] = (text, *load_documents(path))
  return result


def worker_pools(spec: dict, component: str) -> list[dict]:
  params = spec["components"][f"comp-{component}"]["inputDefinitions"]["parameters"]
  return params["worker_pool_specs"]["defaultValue"]


def test_every_target_parses_as_pipeline_spec(compiled):
  for name, (_, spec, platform) in compiled.items():
    message = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert message.pipeline_info.name == "paligemma-finetune", name
    assert {"fingerprint", "download", "convert", "finetune", "evaluate", "evaluate-2", "champion", "rescore", "gate",
            "condition-1"} <= set(message.root.dag.tasks), name
    if platform is not None:
      json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())


def test_export_only_runs_when_the_gate_passes(compiled):
  _, spec, _ = compiled["local"]
  condition = spec["root"]["dag"]["tasks"]["condition-1"]
  assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-passed'] == true"
  assert set(spec["components"]["comp-condition-1"]["dag"]["tasks"]) == {"export", "promote"}
  assert "export" not in spec["root"]["dag"]["tasks"]


def test_pipeline_parameters(compiled):
  _, spec, _ = compiled["vertex-tpu-v5e-8"]
  params = spec["root"]["inputDefinitions"]["parameters"]
  for name in ("model", "dataset_uri", "dataset_format", "task", "trainable", "total_steps", "epochs",
               "batch_size", "lr", "target", "champion_uri", "export_uri", "rebaseline"):
    assert name in params
  assert params["target"]["defaultValue"] == "vertex-tpu-v5e-8"
  assert not params["dataset_uri"].get("isOptional")
  for name in ("trainable", "total_steps", "epochs", "batch_size", "lr", "text_len"):  # None: the config's value
    assert params[name]["isOptional"] is True and "defaultValue" not in params[name], name


@pytest.mark.parametrize("name", ["local", "vertex-tpu-v5e-8"])
def test_the_task_and_mask_codec_reach_download_and_convert(compiled, name):
  """Task segment: download fetches the codec (`vqvae`, "" = the released one) with the model and convert
  encodes the masks with the same one; evaluate and rescore take it from the model they score (its
  model.json), so no codec parameter is wired to them."""
  _, spec, _ = compiled[name]
  params = spec["root"]["inputDefinitions"]["parameters"]
  assert params["vqvae"]["defaultValue"] == "" and params["task"]["defaultValue"] == "detect"
  tasks = spec["root"]["dag"]["tasks"]
  for task in ("download", "convert"):
    for param in ("task", "vqvae"):
      assert tasks[task]["inputs"]["parameters"][param] == {"componentInputParameter": param}, (task, param)
  for task in ("evaluate", "evaluate-2", "rescore"):
    assert "vqvae" not in tasks[task]["inputs"].get("parameters", {}), task


@pytest.mark.parametrize("name", ["local", "vertex-tpu-v5e-8"])
def test_the_pipeline_seed_reaches_the_split_and_the_trainer(compiled, name):
  _, spec, _ = compiled[name]
  tasks = spec["root"]["dag"]["tasks"]
  for task in ("convert", "finetune"):
    assert tasks[task]["inputs"]["parameters"]["seed"] == {"componentInputParameter": "seed"}, task
  for setting in ("lr", "epochs", "total_steps"):  # the settings flow through unset, not as 0
    assert tasks["finetune"]["inputs"]["parameters"][setting] == {"componentInputParameter": setting}


def test_steps_run_in_the_version_pinned_image(compiled):
  for name, (_, spec, _) in compiled.items():
    want = images.image_uri(get_target(name).image_flavor, REGISTRY)
    assert want.endswith(f":{images.PACKAGE_VERSION}")
    used = set()
    for executor_name, executor in spec["deploymentSpec"]["executors"].items():
      image = executor["container"]["image"]
      if "google-cloud-pipeline-components" in image:  # the Vertex custom-job launcher; the step is inside
        component = executor_name.removeprefix("exec-")
        used |= {pool["container_spec"]["image_uri"] for pool in worker_pools(spec, component)}
      else:
        used.add(image)
    assert used == {want}, name


@pytest.mark.parametrize("name", [n for n, t in TARGETS.items() if t.platform == "vertex"])
def test_vertex_heavy_steps_are_custom_jobs_on_the_target_machines(compiled, name):
  target = TARGETS[name]
  _, spec, _ = compiled[name]
  for component in HEAVY:
    pools = worker_pools(spec, component)
    replicas = sum(int(pool["replica_count"]) for pool in pools)
    assert replicas == (target.hosts if component == "finetune" else 1), (name, component)
    for pool in pools:
      machine = pool["machine_spec"]
      assert machine["machine_type"] == target.machine_type
      if target.is_tpu:
        expected = target.tpu_topology if component == "finetune" else target.single_host().tpu_topology
        assert machine["tpu_topology"] == expected
        assert "accelerator_type" not in machine  # TPU VM machine types carry their chips
      else:
        assert machine["accelerator_type"] == target.accelerator_type
        assert machine["accelerator_count"] == target.accelerator_count
  # The light steps stay on Vertex's default machines, sized by CPU/memory limits.
  assert "cpuLimit" in spec["deploymentSpec"]["executors"]["exec-convert"]["container"]["resources"]


def test_multi_host_tpu_targets_train_on_every_host():
  multi = [t for t in TARGETS.values() if t.hosts > 1]
  assert multi, "the table should offer multi-host slices"
  for target in multi:
    chips = 1
    for side in target.tpu_topology.split("x"):
      chips *= int(side)
    assert chips == target.chips, target.name  # hosts x chips per host = the slice's chips


@pytest.mark.parametrize("name", [n for n, t in TARGETS.items() if t.platform == "kfp"])
def test_kfp_heavy_steps_land_on_accelerator_nodes(compiled, name):
  target = TARGETS[name]
  _, spec, platform = compiled[name]
  k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
  for component in HEAVY:
    resources = spec["deploymentSpec"]["executors"][f"exec-{component}"]["container"].get("resources", {})
    if not target.accelerator_type:
      assert "accelerator" not in resources
      continue
    assert resources["accelerator"]["resourceType"] == target.accelerator_type
    assert int(resources["accelerator"]["resourceCount"]) == target.accelerator_count
    assert {"key": target.accelerator_type, "operator": "Exists", "effect": "NoSchedule"} in \
        k8s[f"exec-{component}"]["tolerations"]
    if target.is_tpu:
      assert k8s[f"exec-{component}"]["nodeSelector"]["labels"] == {
          "cloud.google.com/gke-tpu-accelerator": target.gke_tpu_accelerator,
          "cloud.google.com/gke-tpu-topology": target.tpu_topology}
  # Credentials reach the download step from a Kubernetes secret, by name only.
  secret = k8s["exec-download"]["secretAsEnv"][0]
  assert secret["secretName"] == "paligemma-credentials" and secret["optional"] is True


def test_local_target_asks_for_no_hardware(compiled):
  _, spec, platform = compiled["local"]
  assert platform is None
  for executor in spec["deploymentSpec"]["executors"].values():
    assert "accelerator" not in executor["container"].get("resources", {})


def test_no_secret_in_any_compiled_pipeline(compiled):
  for name, (text, _, _) in compiled.items():
    for env_name, value in SECRETS.items():
      assert value not in text, f"{env_name}'s value leaked into the {name} pipeline"


def test_unknown_target_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="unknown target 'vertex-tpu-v9'.*vertex-tpu-v5e-4"):
    compile_pipeline("vertex-tpu-v9", str(tmp_path / "p.yaml"))


def test_compile_cli_writes_the_yaml(tmp_path, capsys):
  out = tmp_path / "sub" / "pipeline.yaml"
  assert compile_main(["--target", "kfp-gpu", "--output", str(out), "--project", "acme", "--region",
                       "us-east1"]) == 0
  spec, _ = load_documents(str(out))
  assert spec["deploymentSpec"]["executors"]["exec-finetune"]["container"]["image"] == \
      images.image_uri("gpu", "us-east1-docker.pkg.dev/acme/paligemma")
  assert str(out) in capsys.readouterr().out
  assert not [p for p in out.parent.iterdir() if p.name.startswith(".pipeline-")]  # no temp file left


def test_cloud_finetune_is_retried_after_preemption(compiled):
  for name, (_, spec, _) in compiled.items():
    retry = spec["root"]["dag"]["tasks"]["finetune"].get("retryPolicy")
    if TARGETS[name].platform == "local":
      assert retry is None
    else:
      assert retry["maxRetryCount"] == 2, name


STEP_COMPONENTS = {  # the DAG's task -> the step's own component (components/<step>/component.py)
    "download": "components.download.component:download_model_dir",
    "convert": "components.convert.component:convert_dataset",
    "finetune": "components.finetune.component:finetune_model",
    "evaluate": "components.evaluate.component:evaluate_model",
    "evaluate-2": "components.evaluate.component:evaluate_model",
    "export": "components.export.component:export_model",
}


@pytest.mark.parametrize("target", ["local", "kfp-gke-tpu-v5e-4"])
def test_dag_steps_are_the_steps_own_components(compiled, tmp_path, target):
  """One set of components: the DAG's step tasks run the same code, with the same inputs and outputs, as
  each step's component compiled alone; only the image (and the short task name) differ."""
  import importlib

  from kfp import compiler

  _, spec, _ = compiled[target]
  for task, ref in STEP_COMPONENTS.items():
    module_name, name = ref.split(":")
    path = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(getattr(importlib.import_module(module_name), name), str(path))
    alone, _ = load_documents(str(path))
    (alone_executor,) = alone["deploymentSpec"]["executors"].values()
    in_dag = spec["root"]["dag"]["tasks"][task] if task in spec["root"]["dag"]["tasks"] else \
        spec["components"]["comp-condition-1"]["dag"]["tasks"][task]
    component = spec["components"][in_dag["componentRef"]["name"]]
    executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    assert executor["command"] == alone_executor["container"]["command"], task  # the same function source
    assert executor["args"] == alone_executor["container"]["args"], task
    assert executor["image"] == images.image_uri(get_target(target).image_flavor, REGISTRY)
    assert component["inputDefinitions"] == alone["root"]["inputDefinitions"], task
    assert component["outputDefinitions"] == alone["root"]["outputDefinitions"], task


def test_dag_passes_the_pipeline_parameters_to_the_step_inputs(compiled):
  _, spec, _ = compiled["local"]
  tasks = spec["root"]["dag"]["tasks"]

  def source(task, name):
    return tasks[task]["inputs"]["parameters"][name]["componentInputParameter"]

  assert source("convert", "input_uri") == "dataset_uri" and source("convert", "data_format") == "dataset_format"
  for name in ("trainable", "total_steps", "epochs", "batch_size", "lr", "text_len"):
    assert source("finetune", name) == name
  assert source("finetune", "config") == "finetune_config" and source("finetune", "overrides") == "finetune_overrides"
  baseline = tasks["evaluate-2"]["inputs"]["artifacts"]["baseline"]["taskOutputArtifact"]
  assert baseline == {"producerTask": "evaluate", "outputArtifactKey": "evaluation"}
  export = spec["components"]["comp-condition-1"]["dag"]["tasks"]["export"]["inputs"]
  assert export["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
  assert export["parameters"]["export_uri"]["componentInputParameter"] == "pipelinechannel--export_uri"
  assert export["artifacts"] == {"model": {"componentInputArtifact": "pipelinechannel--finetune-tuned_model"},
                                 "evaluation": {"componentInputArtifact": "pipelinechannel--evaluate-2-evaluation"}}


def tasks_of(spec: dict) -> dict:
  """Every task of the DAG, the ones inside the gate's condition included."""
  return {**spec["root"]["dag"]["tasks"], **spec["components"]["comp-condition-1"]["dag"]["tasks"]}


def test_steps_reading_outside_state_are_never_cached_and_convert_is_keyed_by_the_listing(compiled):
  """A cached convert would serve yesterday's dataset to a run whose prefix has new files: its cache key holds
  the fingerprint of the prefix's listing, computed by an uncached first step. The steps that read or write
  the champion record (and export, which writes outside the pipeline root) never come from the cache; the
  evaluations and finetune stay cacheable (their input artifacts change when the dataset does)."""
  for name, (_, spec, _) in compiled.items():
    tasks = tasks_of(spec)
    caching = {task: tasks[task].get("cachingOptions", {}).get("enableCache", False) for task in tasks
               if task != "condition-1"}
    assert caching == {"fingerprint": False, "convert": True, "download": True, "finetune": True,
                       "evaluate": True, "evaluate-2": True, "champion": False, "rescore": True, "gate": False,
                       "export": False, "promote": False}, name
    source = tasks["convert"]["inputs"]["parameters"]["source_fingerprint"]["taskOutputParameter"]
    assert source == {"producerTask": "fingerprint", "outputParameterKey": "Output"}, name
    assert tasks["fingerprint"]["inputs"]["parameters"]["dataset_uri"]["componentInputParameter"] == "dataset_uri"


def test_the_champion_is_rescored_on_the_same_split_with_the_same_settings(compiled):
  """The rescore task gets convert's dataset and exactly the evaluate tasks' settings, and the model URI the
  champion step read; the gate gets its evaluation and the champion step's record."""
  _, spec, _ = compiled["local"]
  tasks = spec["root"]["dag"]["tasks"]
  rescore, tuned = tasks["rescore"]["inputs"], tasks["evaluate-2"]["inputs"]
  assert rescore["artifacts"]["dataset"] == tuned["artifacts"]["dataset"] == {
      "taskOutputArtifact": {"producerTask": "convert", "outputArtifactKey": "dataset"}}
  # run_id only labels the tuned report's header (the others stay cacheable): not an evaluation setting.
  shared = {k: v for k, v in tuned["parameters"].items() if k not in ("model", "run_id")}
  assert tuned["parameters"]["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_name}}"}}
  assert "run_id" not in tasks["evaluate"]["inputs"]["parameters"]  # the base evaluation stays cacheable
  assert {k: rescore["parameters"][k] for k in shared} == shared
  assert rescore["parameters"]["model_uri"]["taskOutputParameter"] == {"producerTask": "champion",
                                                                       "outputParameterKey": "model_uri"}
  gate = tasks["gate"]["inputs"]
  assert gate["artifacts"]["champion_evaluation"]["taskOutputArtifact"] == {"producerTask": "rescore",
                                                                            "outputArtifactKey": "evaluation"}
  assert gate["parameters"]["champion"]["taskOutputParameter"] == {"producerTask": "champion",
                                                                   "outputParameterKey": "champion"}
  assert tasks["champion"]["inputs"]["parameters"]["rebaseline"]["componentInputParameter"] == "rebaseline"
