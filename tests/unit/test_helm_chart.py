"""The Helm chart (deploy/helm/circadia) as Helm renders it, with the default values and with
values-production.yaml: lint, then the fields that matter — probes, non-root, resources, the
worker's cap at the partition count, the fan-out's shutdown budget, disruption budgets, no secret
material anywhere — and the production environment passing the services' own start-up checks.

Helm is tools/helm/helm, built once from the Go module proxy into the cache; a Helm that cannot
be built fails these tests, never skips them.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import os
import re
import secrets
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.server import serve

from circadia.config import ServiceSettings
from circadia.secrets import Secret
from circadia.topics import HEALTH_SAMPLES, PREDICTIONS, TOPICS
from fanout_gateway.settings import FanoutSettings
from ingest_gateway.settings import IngestSettings
from prediction_worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "tools" / "helm" / "helm"
CHART = ROOT / "deploy" / "helm" / "circadia"
PRODUCTION = CHART / "values-production.yaml"
VALUES = {"default": (), "production": ("-f", str(PRODUCTION))}

SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingest-gateway": IngestSettings, "prediction-worker": WorkerSettings, "fanout-gateway": FanoutSettings}
# each service's default port: the one its image exposes and the chart binds
PORTS = {name: settings.model_fields[field].default for (name, settings), field in zip(
    SETTINGS.items(), ("ingest_port", "worker_metrics_port", "fanout_port"), strict=True)}
WORKLOADS = ("Deployment", "StatefulSet")
# every secret any service reads, as the environment variable that would carry it
SECRET_VARIABLES = {f"CIRCADIA_{name.upper()}" for name in (*IngestSettings.SECRETS, "vault_token", "vault_secret_id")}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module", autouse=True)
def helm_built() -> None:
    """The first call builds Helm (minutes); a build that fails is a failure of these tests."""
    result = helm("version", "--short")
    if result.returncode != 0:
        pytest.fail(f"tools/helm/helm could not build or run Helm:\n{result.stdout}{result.stderr}")


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", "circadia", str(CHART), "--namespace", "circadia", *args)


_rendered: dict[tuple[str, ...], list[dict[str, Any]]] = {}


def render(*args: str) -> list[dict[str, Any]]:
    if args not in _rendered:
        result = template(*args)
        assert result.returncode == 0, result.stderr
        _rendered[args] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return _rendered[args]


@pytest.fixture(params=list(VALUES))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objects(variant: str) -> list[dict[str, Any]]:
    return render(*VALUES[variant])


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {component(o): o for o in objects if o["kind"] in WORKLOADS}
    assert set(found) == set(SETTINGS)
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def environment(workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod would see it (a pod's name for a fieldRef)."""
    env = {}
    for entry in container(workload)["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, entry
            env[entry["name"]] = f"{workload['metadata']['name']}-0"
    return env


def settings_of(name: str, workload: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The service's settings class built from exactly the rendered environment."""
    for variable in list(os.environ):
        if variable.startswith(("CIRCADIA_", "KAFKA_", "OTEL_")):
            monkeypatch.delenv(variable)
    for variable, value in environment(workload).items():
        monkeypatch.setenv(variable, value)
    return SETTINGS[name]()


def values(variant: str = "default") -> dict[str, Any]:
    """values.yaml with the variant's file over it, merged as Helm merges maps."""
    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        for key, value in over.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return base

    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if variant == "production":
        merged = merge(merged, yaml.safe_load(PRODUCTION.read_text()))
    return merged


# --- lint, and the copies of the alert rules and dashboards ---------------------------------

@pytest.mark.parametrize("name", list(VALUES))
def test_lint(name: str) -> None:
    result = helm("lint", "--strict", str(CHART), *VALUES[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_charts_alert_rules_and_dashboards_are_the_projects() -> None:
    assert (CHART / "files" / "alerts.yml").read_bytes() == (ROOT / "deploy" / "prometheus" / "alerts.yml").read_bytes()
    source = ROOT / "deploy" / "grafana" / "dashboards"
    copies = CHART / "files" / "dashboards"
    assert sorted(p.name for p in copies.iterdir()) == sorted(p.name for p in source.glob("*.json"))
    for path in source.glob("*.json"):
        assert (copies / path.name).read_bytes() == path.read_bytes(), f"copy {copies / path.name} again"


def test_the_rules_and_dashboards_render_as_they_are() -> None:
    objects = render(*VALUES["production"])
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    dashboards = {key: json.loads(text) for o in objects if o["kind"] == "ConfigMap"
                  if o["metadata"]["labels"].get("grafana_dashboard") == "1" for key, text in o["data"].items()}
    source = (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")
    assert dashboards == {path.name: json.loads(path.read_text()) for path in source}


def test_every_metrics_port_is_scraped_under_the_job_names_the_alerts_use() -> None:
    objects = render(*VALUES["production"])
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    jobs = set(re.search(r'up\{job=~"([^"]+)"\}', alerts).group(1).split("|"))  # type: ignore[union-attr]
    monitors = {component(o): o for o in objects if o["kind"] == "ServiceMonitor"}
    services = {component(o): o for o in objects if o["kind"] == "Service"}
    assert set(monitors) == set(services) == jobs
    for name, monitor in monitors.items():
        spec = monitor["spec"]
        assert spec["jobLabel"] == "app.kubernetes.io/component"
        assert services[name]["metadata"]["labels"][spec["jobLabel"]] == name
        assert spec["selector"]["matchLabels"].items() <= services[name]["metadata"]["labels"].items()
        (endpoint,) = spec["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in services[name]["spec"]["ports"]}


# --- the pods -------------------------------------------------------------------------------

def test_probes_are_healthz_and_readyz_on_the_services_port(objects: list[dict[str, Any]]) -> None:
    for name, workload in workloads(objects).items():
        spec = container(workload)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        env = environment(workload)
        (port_variable,) = [v for v in env if v.endswith("_PORT")]
        assert int(env[port_variable]) == PORTS[name] and list(ports.values()) == [PORTS[name]]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = spec[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert ports.get(get["port"], get["port"]) == PORTS[name], (name, probe)
        assert env[port_variable.replace("_PORT", "_HOST")] == "0.0.0.0"  # noqa: S104  # reachable by the probes


def test_containers_run_as_non_root_from_a_read_only_root(objects: list[dict[str, Any]]) -> None:
    for name, workload in workloads(objects).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = container(workload)["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        # what a service writes goes to emptyDirs: /tmp, and the worker's data dir
        empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        writable = {m["mountPath"] for m in container(workload)["volumeMounts"] if m["name"] in empty}
        expected = {"/tmp"} | ({environment(workload)["CIRCADIA_WORKER_DATA_DIR"]}  # noqa: S108
                               if name == "prediction-worker" else set())
        assert writable == expected, name


def quantity(value: str | int | float) -> float:
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_every_container_has_cpu_and_memory_requests_and_limits(objects: list[dict[str, Any]]) -> None:
    for name, workload in workloads(objects).items():
        resources = container(workload)["resources"]
        for resource in ("cpu", "memory"):
            request, limit = resources["requests"][resource], resources["limits"][resource]
            assert 0 < quantity(request) <= quantity(limit), (name, resource)


def test_every_workload_has_a_disruption_budget(objects: list[dict[str, Any]]) -> None:
    budgets = {component(o): o for o in objects if o["kind"] == "PodDisruptionBudget"}
    for name, workload in workloads(objects).items():
        spec = budgets[name]["spec"]
        assert spec["selector"] == workload["spec"]["selector"]
        assert spec.get("maxUnavailable") == 1


def test_production_sets_production_and_passes_the_services_start_up_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, workload in workloads(render(*VALUES["production"])).items():
        settings = settings_of(name, workload, monkeypatch)
        assert settings.env == "production"
        # the secrets as the mounted Secret would hold them (each strong; the Sentry DSN optional)
        directory = settings.secrets_dir
        read = [key for key in type(settings).SECRETS if key != "sentry_dsn"]
        supplied = {key: Secret(key, secrets.token_urlsafe(32), f"file:{directory}/{key}") for key in read}
        assert settings.problems(supplied) == [], name
        assert str(directory) == "/run/secrets"
        mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mounts[str(directory)]]["secret"]["secretName"] == values("production")[
            {"ingest-gateway": "ingestGateway", "prediction-worker": "predictionWorker",
             "fanout-gateway": "fanoutGateway"}[name]]["secrets"]["existingSecret"]
        assert settings.kafka_ssl_cafile is not None and str(settings.kafka_ssl_cafile).startswith(
            next(p for p, v in mounts.items() if v == "kafka-ca"))


def test_the_environment_names_only_settings_the_service_has(objects: list[dict[str, Any]]) -> None:
    for name, workload in workloads(objects).items():
        known = {f"CIRCADIA_{field.upper()}" for field in SETTINGS[name].model_fields} | {"KAFKA_BOOTSTRAP_SERVERS"}
        for variable in environment(workload):
            assert variable in known or variable.startswith("OTEL_"), f"{name} has no setting {variable}"
            assert variable not in SECRET_VARIABLES, f"{name}: {variable} is a secret; secrets come from files"


def test_default_values_are_development_and_still_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, workload in workloads(render()).items():
        settings = settings_of(name, workload, monkeypatch)
        assert settings.env == "development"
        assert settings.problems({}) == [], name


# --- the worker: capped at the partitions, and rolled without losing an upload --------------

def declared_partitions(topic: str) -> int:
    return next(spec.partitions for spec in TOPICS if spec.name == topic)


def test_the_chart_knows_the_declared_partition_counts() -> None:
    partitions = values()["kafka"]["partitions"]
    assert partitions == declared_partitions(HEALTH_SAMPLES) == declared_partitions(PREDICTIONS)
    assert values("production")["kafka"]["partitions"] == partitions


def test_the_worker_scales_on_lag_up_to_the_partition_count(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(*VALUES["production"])
    (scaled,) = [o for o in objects if o["kind"] == "ScaledObject"]
    worker = workloads(objects)["prediction-worker"]
    assert scaled["spec"]["maxReplicaCount"] == declared_partitions(HEALTH_SAMPLES)
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": worker["kind"],
                                                "name": worker["metadata"]["name"]}
    (trigger,) = scaled["spec"]["triggers"]
    settings = settings_of("prediction-worker", worker, monkeypatch)
    assert isinstance(settings, WorkerSettings)
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == HEALTH_SAMPLES
    assert trigger["metadata"]["consumerGroup"] == settings.worker_app_id  # faust's group id is the app id
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap_servers
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    (auth,) = [o for o in objects if o["kind"] == "TriggerAuthentication"]
    assert auth["metadata"]["name"] == trigger["authenticationRef"]["name"]
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"password", "ca"}


@pytest.mark.parametrize("overrides", [
    ("predictionWorker.autoscaling.maxReplicas=7",),
    ("kafka.partitions=4", "predictionWorker.autoscaling.maxReplicas=6"),
    ("predictionWorker.autoscaling.enabled=false", "predictionWorker.replicas=7"),
])
def test_more_workers_than_partitions_fail_the_render(overrides: tuple[str, ...]) -> None:
    result = template(*VALUES["production"], *(f"--set={override}" for override in overrides))
    assert result.returncode != 0
    assert "gets no partition" in result.stderr


def test_production_workers_have_static_membership_and_roll_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = workloads(render(*VALUES["production"]))["prediction-worker"]
    assert worker["kind"] == "StatefulSet" and worker["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    settings = settings_of("prediction-worker", worker, monkeypatch)
    assert isinstance(settings, WorkerSettings)
    assert settings.worker_instance_id == f"{worker['metadata']['name']}-0"  # the pod's own, stable name
    default = workloads(render())["prediction-worker"]
    assert default["kind"] == "Deployment"
    assert default["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert "CIRCADIA_WORKER_INSTANCE_ID" not in environment(default)


# --- the gateways' shutdown budgets ---------------------------------------------------------

def pre_stop_seconds(workload: dict[str, Any]) -> int:
    command = container(workload)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


def test_the_fanouts_grace_period_is_its_drain_budget(variant: str, objects: list[dict[str, Any]],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fanout = workloads(objects)["fanout-gateway"]
    settings = settings_of("fanout-gateway", fanout, monkeypatch)
    assert isinstance(settings, FanoutSettings)
    shutdown = values(variant)["fanoutGateway"]["shutdown"]
    # the closing handshakes after the drain wait as long as websockets lets them
    assert shutdown["closeSeconds"] >= inspect.signature(serve).parameters["close_timeout"].default
    grace = fanout["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == (pre_stop_seconds(fanout) + math.ceil(settings.fanout_drain_seconds) + shutdown["closeSeconds"]
                     + shutdown["marginSeconds"])
    # the next replica drains only once this one's clients have spread their reconnects
    assert fanout["spec"]["minReadySeconds"] == math.ceil(settings.fanout_reconnect_spread_ms / 1000)
    assert fanout["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_the_grace_periods_follow_the_settings() -> None:
    longer = render(*VALUES["production"], "--set", "fanoutGateway.config.CIRCADIA_FANOUT_DRAIN_SECONDS=32.5",
                    "--set", "fanoutGateway.config.CIRCADIA_FANOUT_RECONNECT_SPREAD_MS=30001",
                    "--set", "ingestGateway.config.CIRCADIA_INGEST_PRODUCE_TIMEOUT_SECONDS=40")
    base = workloads(render(*VALUES["production"]))
    changed = workloads(longer)

    def grace(found: dict[str, dict[str, Any]], name: str) -> int:
        return int(found[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    assert grace(changed, "fanout-gateway") - grace(base, "fanout-gateway") == 33 - 5
    assert changed["fanout-gateway"]["spec"]["minReadySeconds"] == 31
    assert grace(changed, "ingest-gateway") - grace(base, "ingest-gateway") == 40 - 10


def test_the_ingest_gateways_grace_covers_an_uploads_longest_wait(objects: list[dict[str, Any]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ingest = workloads(objects)["ingest-gateway"]
    settings = settings_of("ingest-gateway", ingest, monkeypatch)
    grace = ingest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert isinstance(settings, IngestSettings)
    longest = settings.ingest_parse_wait_seconds + settings.ingest_produce_timeout_seconds
    assert grace > pre_stop_seconds(ingest) + longest


# --- secrets: only references, never material ------------------------------------------------

PEM = re.compile(r"-----BEGIN [A-Z ]*-----")
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s@\"']+@")
SECRET_KEY = re.compile(r"(?i)password|passwd|token|dsn|secret_id|api_?key|private_?key|credential")
# what may stand under a secret-sounding key: a path (a file, a Vault path), a Vault agent template
# (which names the secret, never holds it), a file mode
REFERENCE = re.compile(r"^[\w.-]*(/[\w.{}-]+)+$|^\{\{-? with secret \"[^\"]+\" -?\}\}.*\{\{-? end -?\}\}$|^0[0-7]{3}$")
CANDIDATE = re.compile(r"[A-Za-z0-9+/=_-]{20,}")


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_random(token: str) -> bool:
    """A high-entropy run of token characters: a key, a password, a token (not an identifier
    made of words, such as an alert's name)."""
    if re.fullmatch(r"[0-9a-f]{32,}", token):
        return entropy(token) > 3.0
    if re.fullmatch(r"(?:[A-Z]?[a-z]{2,}|[0-9]+|[_.-])+", token):
        return False
    has_classes = sum(bool(re.search(p, token)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]")) >= 2
    return has_classes and entropy(token) > 4.0


def secret_material(node: Any, path: str = "") -> list[str]:
    """Where a document holds something that looks like a secret rather than a reference to one."""
    found = []
    if isinstance(node, dict):
        name = node.get("name")
        if set(node) == {"name", "value"} and isinstance(name, str) and SECRET_KEY.search(name) \
                and not REFERENCE.match(str(node["value"])):
            found.append(f"{path}: the variable {name} has a literal value")
        for key, value in node.items():
            if SECRET_KEY.search(str(key)) and isinstance(value, str) and value and not REFERENCE.match(value):
                found.append(f"{path}.{key}: a secret-sounding key with a literal value")
            found += secret_material(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += secret_material(item, f"{path}[{index}]")
    elif isinstance(node, str):
        if PEM.search(node):
            found.append(f"{path}: a PEM block")
        if URL_CREDENTIALS.search(node):
            found.append(f"{path}: credentials in a URL")
        found += [f"{path}: a random-looking string" for token in CANDIDATE.findall(node) if looks_random(token)]
    return found


def test_no_secret_objects_and_no_secret_material(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    for obj in objects:
        assert secret_material(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_the_values_files_hold_no_secret_material() -> None:
    for path in (CHART / "values.yaml", PRODUCTION):
        assert secret_material(yaml.safe_load(path.read_text())) == [], path.name


def test_the_secret_scan_finds_what_it_looks_for() -> None:
    kind = "PRIVATE KEY"
    planted = [
        {"env": [{"name": "CIRCADIA_REDIS_PASSWORD", "value": "correct horse"}]},
        {"annotations": {"sentry-dsn": "abc"}},
        # planted values are generated here, at run time: none is a literal in the tree
        {"data": f"-----BEGIN {kind}-----\n{base64.b64encode(secrets.token_bytes(48)).decode()}\n-----END {kind}-----"},
        {"url": f"https://{secrets.token_hex(16)}@o1.ingest.sentry.io/1"},
        {"value": secrets.token_urlsafe(32)},
        {"value": secrets.token_hex(32)},
    ]
    for document in planted:
        assert secret_material(document), document
    vault_path = "secret/data/circadia/fanout-gateway"
    references = {"vault.hashicorp.com/agent-inject-secret-redis_password": vault_path,
                  "automountServiceAccountToken": True,
                  "env": [{"name": "CIRCADIA_KAFKA_SASL_PASSWORD_FILE", "value": "/run/secrets/kafka_sasl_password"}]}
    assert secret_material(references) == []


def test_a_secret_in_the_values_fails_the_render() -> None:
    result = template("--set", "config.CIRCADIA_REDIS_PASSWORD=correct-horse-battery")
    assert result.returncode != 0 and "values never hold secrets" in result.stderr


def test_vault_agent_secrets_are_files_the_service_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(*VALUES["production"], "--set", "vault.agent.enabled=true",
                     *(f"--set={key}.secrets.existingSecret=" for key in ("ingestGateway", "predictionWorker",
                                                                           "fanoutGateway")),
                     "--set", "predictionWorker.autoscaling.kafkaPasswordSecret.name=circadia-keda-kafka")
    for name, workload in workloads(objects).items():
        pod = workload["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["vault.hashicorp.com/agent-inject"] == "true"
        assert annotations["vault.hashicorp.com/role"] == f"circadia-{name}"
        prefix = "vault.hashicorp.com/agent-inject-secret-"
        injected = {key.removeprefix(prefix) for key in annotations if key.startswith(prefix)}
        assert injected and injected <= set(SETTINGS[name].SECRETS)
        assert settings_of(name, workload, monkeypatch).secrets_dir == Path("/vault/secrets")
        assert not [v for v in pod["spec"]["volumes"] if "secret" in v and v["name"] == "secrets"]
        assert pod["spec"]["automountServiceAccountToken"] is True  # the agent's Kubernetes login
        assert secret_material(workload) == []
