"""Kubernetes deployment (#17): the user-code image's Dockerfile and the values for the official
Dagster Helm chart, checked as far as a machine without Docker, helm or a cluster allows: both
parsed, their contract with each other and with the project asserted, and every key path the
values set compared with the chart's values schema.

The chart's schema is not copied here. CHART_PATHS lists the paths these values use, each one
read in dagster-io/dagster `helm/dagster/values.schema.json` (the `DagsterHelmValues` schema:
Global, ServiceAccount, PostgreSQL, UserDeployments/UserDeployment, RunLauncher/
K8sRunLauncherConfig, ComputeLogManager/S3ComputeLogManager, Daemon/RunCoordinator/
QueuedRunCoordinatorConfig/BlockOpConcurrencyLimitedRuns/Sensors/Schedules, Webserver,
PythonLogs, Telemetry, additionalInstanceConfig) and, for run monitoring, in the chart's
`templates/configmap-instance.yaml` (it renders `runMonitoring.enabled` and
`runMonitoring.freeSlotsAfterRunEndSeconds`). With POTATO_DAGSTER_CHART_SCHEMA naming a
downloaded values.schema.json, test_every_path_exists_in_the_chart_schema checks them against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from potato_assets_tests.helpers import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
VALUES = REPO / "deploy" / "helm" / "values.yaml"

# Subtrees whose content the chart passes through as Kubernetes or Dagster objects (schema type
# "object" or a Kubernetes $ref): their inner keys are not the chart's.
OPAQUE = {
    "postgresql.postgresqlParams",
    "dagster-user-deployments.deployments[].podSecurityContext",
    "dagster-user-deployments.deployments[].securityContext",
    "dagster-user-deployments.deployments[].resources",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.containerConfig",
    "dagsterDaemon.runMonitoring",
    "pythonLogs.dagsterHandlerConfig",
    "additionalInstanceConfig",
}
# ConfigMapEnvSource / SecretEnvSource items: Kubernetes references, `name` only.
ENV_SOURCES = ("envConfigMaps", "envSecrets")

CHART_PATHS = {
    "global.postgresqlSecretName",
    "global.serviceAccountName",
    "serviceAccount.create",
    "serviceAccount.name",
    "postgresql.enabled",
    "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername",
    "postgresql.postgresqlDatabase",
    "postgresql.postgresqlScheme",
    "postgresql.postgresqlParams",
    "postgresql.service.port",
    "generatePostgresqlPasswordSecret",
    "dagster-user-deployments.enabled",
    "dagster-user-deployments.enableSubchart",
    "dagster-user-deployments.deployments[].name",
    "dagster-user-deployments.deployments[].image.repository",
    "dagster-user-deployments.deployments[].image.tag",
    "dagster-user-deployments.deployments[].image.pullPolicy",
    "dagster-user-deployments.deployments[].codeServerArgs",
    "dagster-user-deployments.deployments[].port",
    "dagster-user-deployments.deployments[].envConfigMaps",
    "dagster-user-deployments.deployments[].envSecrets",
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled",
    "dagster-user-deployments.deployments[].podSecurityContext",
    "dagster-user-deployments.deployments[].securityContext",
    "dagster-user-deployments.deployments[].resources",
    "runLauncher.type",
    "runLauncher.config.k8sRunLauncher.loadInclusterConfig",
    "runLauncher.config.k8sRunLauncher.imagePullPolicy",
    "runLauncher.config.k8sRunLauncher.envConfigMaps",
    "runLauncher.config.k8sRunLauncher.envSecrets",
    "runLauncher.config.k8sRunLauncher.envVars",
    "runLauncher.config.k8sRunLauncher.volumeMounts",
    "runLauncher.config.k8sRunLauncher.volumes",
    "runLauncher.config.k8sRunLauncher.failPodOnRunFailure",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.containerConfig",
    "computeLogManager.type",
    "computeLogManager.config.s3ComputeLogManager.bucket.env",
    "computeLogManager.config.s3ComputeLogManager.prefix",
    "dagsterDaemon.enabled",
    "dagsterDaemon.image.repository",
    "dagsterDaemon.image.tag",
    "dagsterDaemon.image.pullPolicy",
    "dagsterDaemon.envConfigMaps",
    "dagsterDaemon.envSecrets",
    "dagsterDaemon.runCoordinator.enabled",
    "dagsterDaemon.runMonitoring",
    "dagsterDaemon.sensors.useThreads",
    "dagsterDaemon.sensors.numWorkers",
    "dagsterDaemon.schedules.useThreads",
    "dagsterDaemon.schedules.numWorkers",
    "dagsterWebserver.image.repository",
    "dagsterWebserver.image.tag",
    "dagsterWebserver.image.pullPolicy",
    "dagsterWebserver.envConfigMaps",
    "dagsterWebserver.envSecrets",
    "pythonLogs.dagsterHandlerConfig",
    "telemetry.enabled",
    "additionalInstanceConfig",
}
# What configmap-instance.yaml reads of dagsterDaemon.runMonitoring (the schema says "object").
RUN_MONITORING_KEYS = {"enabled", "startTimeoutSeconds", "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds"}


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def key_paths(node: object, prefix: str = "") -> set[str]:
    """Dotted paths of what a values tree sets; list items as `[]`, opaque subtrees whole."""
    if prefix in OPAQUE or prefix.rsplit(".", 1)[-1] in ENV_SOURCES:
        return {prefix}
    if isinstance(node, dict):
        return set().union(*(key_paths(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in node.items()))
    if isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
        return set().union(*(key_paths(item, prefix + "[]") for item in node))
    return {prefix}


# ----------------------------------------------------------------------------------------------
# Dockerfile
# ----------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    assert not current, f"{DOCKERFILE}: a continuation line ends the file"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def pinned(image: str) -> bool:
    """By digest, or by a tag carrying a version number (not `latest`, not a bare name)."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and re.match(r"^v?\d+\.\d+", tag) is not None


def test_the_pin_checker_rejects_floating_images():
    assert pinned("python:3.12.8-slim-bookworm") and pinned("ghcr.io/astral-sh/uv:0.13.8")
    assert pinned("python@sha256:" + "a" * 64)
    for floating in ("python", "python:latest", "python:3-slim", "localhost:5000/python", "python:slim"):
        assert not pinned(floating), floating


def test_dockerfile_images_are_pinned_and_the_final_stage_runs_as_non_root():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args.setdefault(name, default)
    all_stages = stages(instructions)
    assert len(all_stages) >= 2, "a build stage and a slim runtime stage"
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert pinned(image), f"FROM {image} is not pinned by version or digest"
    final = dict((k, v) for k, v in all_stages[-1])  # last of each instruction in the final stage
    user = final["USER"].split(":")[0]
    assert user not in ("root", "0") and (user.isdigit() or re.fullmatch(r"[a-z_][a-z0-9_-]*", user))
    assert int(user) >= 1000
    assert final["EXPOSE"] == "3030"
    health = final["HEALTHCHECK"]
    assert "grpc-health-check" in health and "3030" in health
    command = json.loads(final["CMD"])
    assert command[:3] in (["dagster", "code-server", "start"], ["dagster", "api", "grpc"])
    assert command[command.index("-m") + 1] == "potato_assets.definitions"
    assert command[command.index("-p") + 1] == "3030"


def test_dockerfile_installs_exactly_the_lock_without_dev_tools():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    syncs = [shlex.split(r) for r in runs if r.startswith("uv sync")]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    # Only what the repository has is copied in (a missing file fails the build).
    for keyword, rest in instructions:
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    assert "uv.lock" in copied and "pyproject.toml" in copied
    # uv in lockstep with the project's .uv-version.
    uv_image = next(rest for keyword, rest in instructions if keyword == "FROM" and "astral-sh/uv" in rest)
    assert uv_image.split()[0].endswith(":" + (REPO / ".uv-version").read_text().strip())


def test_dagster_k8s_is_installed_in_lockstep_with_the_other_dagster_libraries():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    aws = next(d for d in pyproject["project"]["dependencies"] if d.startswith("dagster-aws=="))
    text = DOCKERFILE.read_text()
    match = re.search(r"ARG DAGSTER_K8S_VERSION=(\S+)", text)
    assert match and match.group(1) == aws.split("==")[1]
    assert 'dagster-k8s==${DAGSTER_K8S_VERSION}"' in text


# ----------------------------------------------------------------------------------------------
# Helm values
# ----------------------------------------------------------------------------------------------


def test_every_key_path_the_values_set_is_one_checked_in_the_chart_schema():
    assert key_paths(values()) == CHART_PATHS
    monitoring = values()["dagsterDaemon"]["runMonitoring"]
    assert set(monitoring) <= RUN_MONITORING_KEYS


def test_the_path_lister_sees_nested_lists_and_opaque_subtrees():
    tree = {"a": {"b": 1, "c": [{"d": 2}, {"e": 3}]}, "additionalInstanceConfig": {"x": {"y": 1}}, "envSecrets": [{}]}
    assert key_paths(tree) == {"a.b", "a.c[].d", "a.c[].e", "additionalInstanceConfig", "envSecrets"}


def test_values_use_external_postgres_and_existing_secrets_never_literals():
    v = values()
    assert v["postgresql"]["enabled"] is False and v["generatePostgresqlPasswordSecret"] is False
    assert v["global"]["postgresqlSecretName"]
    assert v["postgresql"]["postgresqlParams"] == {"sslmode": "require"}
    # Same driver and TLS as deploy/dagster.postgres.yaml.
    production = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    pg = production["storage"]["custom"]["config"]["postgres_db"]
    assert v["postgresql"]["postgresqlScheme"] == pg["scheme"] and pg["params"] == {"sslmode": "require"}

    def secret_looking(node: object, path: str = "") -> list[str]:
        if isinstance(node, dict):
            return [p for k, val in node.items() for p in secret_looking(val, f"{path}.{k}")]
        if isinstance(node, list):
            return [p for item in node for p in secret_looking(item, path + "[]")]
        name = path.rsplit(".", 1)[-1].lower()
        words = ("password", "token", "secretkey", "apikey")
        # A value under a secret's name (flags such as generatePostgresqlPasswordSecret are not).
        return [path] if isinstance(node, str) and any(word in name for word in words) else []

    assert secret_looking(v) == []


def test_values_run_this_image_with_k8s_run_launcher_and_settings_from_config_maps():
    v = values()
    [deployment] = v["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert deployment["codeServerArgs"] == ["-m", module]
    assert deployment["port"] == 3030
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    image_user = dict(dockerfile_instructions(DOCKERFILE.read_text()))["USER"].split(":")[0]
    assert str(deployment["podSecurityContext"]["runAsUser"]) == image_user
    # One image everywhere: the instance's log handler is this project's code.
    repositories = {
        deployment["image"]["repository"],
        v["dagsterWebserver"]["image"]["repository"],
        v["dagsterDaemon"]["image"]["repository"],
    }
    assert len(repositories) == 1

    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    for holder in (deployment, launcher, v["dagsterDaemon"], v["dagsterWebserver"]):
        assert {"name": "potato-settings"} in holder["envConfigMaps"]
        assert {"name": "potato-secrets"} in holder["envSecrets"]
    assert v["computeLogManager"]["config"]["s3ComputeLogManager"]["bucket"] == {"env": "DAGSTER_COMPUTE_LOG_BUCKET"}


def chart_instance(v: dict) -> dict:
    """The dagster.yaml keys the chart renders from these values that Dagster can check here
    (templates/configmap-instance.yaml; storage, run launcher and compute logs need dagster-postgres,
    dagster-k8s and S3 at load time and are left out)."""
    daemon = v["dagsterDaemon"]
    rendered: dict = {"telemetry": {"enabled": v["telemetry"]["enabled"]}}
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        rendered["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    if v.get("pythonLogs", {}).get("dagsterHandlerConfig"):
        rendered["python_logs"] = {"dagster_handler_config": v["pythonLogs"]["dagsterHandlerConfig"]}
    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring["enabled"]:
        rendered["run_monitoring"] = {
            "enabled": True,
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        }
    sensors = daemon["sensors"]
    rendered["sensors"] = {"use_threads": sensors["useThreads"], "num_workers": sensors["numWorkers"]}
    schedules = daemon["schedules"]
    rendered["schedules"] = {"use_threads": schedules["useThreads"], "num_workers": schedules["numWorkers"]}
    return {**rendered, **v["additionalInstanceConfig"]}


def _load_instance_config(tmp_path: Path, config: dict) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    dagster_instance_config(str(tmp_path))


def test_the_instance_the_chart_renders_is_one_dagster_loads(tmp_path):
    _load_instance_config(tmp_path, chart_instance(values()))
    # The check is not vacuous: the chart's own queued coordinator next to run_queue is refused.
    v = values()
    v["dagsterDaemon"]["runCoordinator"]["enabled"] = True
    from dagster._core.errors import DagsterInvalidConfigError

    with pytest.raises(DagsterInvalidConfigError, match="run_queue"):
        _load_instance_config(tmp_path, chart_instance(v))


def test_the_queue_and_the_lake_pool_match_the_repository_instance():
    v, local = values(), yaml.safe_load((REPO / "dagster.yaml").read_text())
    instance = chart_instance(v)
    for key in ("concurrency", "run_queue", "python_logs", "telemetry"):
        assert instance[key] == local[key], key
    assert "run_coordinator" not in instance and "run_coordinator" not in local
    assert (
        instance["run_monitoring"]["free_slots_after_run_end_seconds"]
        == local["run_monitoring"]["free_slots_after_run_end_seconds"]
    )
    assert instance["sensors"]["use_threads"] is True


# ----------------------------------------------------------------------------------------------
# Against the chart's own schema, when one is at hand
# ----------------------------------------------------------------------------------------------


def schema_has(schema: dict, path: str) -> bool:
    """Whether a dotted values path (list items `[]`) is a property in a JSON schema, following
    local $refs, anyOf/allOf branches and array items."""

    def resolve(node: dict) -> list[dict]:
        if "$ref" in node and node["$ref"].startswith("#/"):
            target: dict = schema
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            return resolve(target) + [{k: v for k, v in node.items() if k != "$ref"}]
        found = [node]
        for key in ("anyOf", "allOf", "oneOf"):
            for branch in node.get(key, []):
                found += resolve(branch)
        return found

    nodes = resolve(schema)
    for part in re.findall(r"[^.\[\]]+(?:\[\])?", path):
        name, is_list = part.removesuffix("[]"), part.endswith("[]")
        nodes = [n for node in nodes for n in resolve(node.get("properties", {}).get(name, {})) if n]
        if is_list:
            nodes = [i for node in nodes if "items" in node for i in resolve(node["items"])]
        if not nodes:
            return False
    return True


def test_the_schema_walker_follows_refs_and_branches():
    schema = {
        "properties": {"a": {"$ref": "#/definitions/A"}, "l": {"type": "array", "items": {"$ref": "#/definitions/B"}}},
        "definitions": {
            "A": {"properties": {"b": {"anyOf": [{"$ref": "#/definitions/B"}, {"type": "null"}]}}},
            "B": {"properties": {"c": {"type": "string"}}},
        },
    }
    assert schema_has(schema, "a.b.c") and schema_has(schema, "l[].c")
    assert not schema_has(schema, "a.x") and not schema_has(schema, "a.b.d") and not schema_has(schema, "l[].b")


CHART_SCHEMA = os.environ.get("POTATO_DAGSTER_CHART_SCHEMA")


@pytest.mark.skipif(
    not CHART_SCHEMA,
    reason="POTATO_DAGSTER_CHART_SCHEMA does not name the Dagster chart's values.schema.json (not bundled)",
)
def test_every_path_exists_in_the_chart_schema():
    schema = json.loads(Path(CHART_SCHEMA or "").read_text())
    missing = [p for p in sorted(CHART_PATHS) if not schema_has(schema, p)]
    assert missing == []
