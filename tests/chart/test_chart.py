"""The Helm chart: lint, render every ci/ scenario, validate against Kubernetes, and check the
properties users rely on (sidecar placement, probes, secrets, schema, config checksum)."""

from __future__ import annotations

import json
import re

import helm_python as helm
import pytest
import yaml
from helpers import (
    CHART,
    CI_VALUES,
    CRD_KINDS,
    K8S_VERSIONS,
    MINIMAL,
    container,
    env_of,
    find,
    helm_error,
    kinds,
    load_yaml,
    merge,
    pod_spec,
    render,
    render_parent,
    render_raw,
    validate_k8s,
    values_file,
)

SECRET_VARS = {"OUTBOX_DATABASE_URL", "DATABASE_URL", "OUTBOX_AMQP_URL", "OUTBOX_KAFKA_PROPERTIES"}

# What each ci/ scenario must render, by kind.
EXPECTED_KINDS = {
    "deployment-rabbitmq": ["ConfigMap", "Deployment", "Service", "ServiceAccount"],
    "deployment-kafka": [
        "ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "PodMonitor",
        "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor",
    ],
    "sidecar-native": ["Deployment", "Job", "PodMonitor"],
    "sidecar-plain": ["Deployment"],
    "sidecar-sinks": ["Deployment"],
}


def all_containers(doc: dict) -> list[dict]:
    if doc["kind"] not in ("Deployment", "Job"):
        return []
    spec = pod_spec(doc)
    return (spec.get("initContainers") or []) + spec["containers"]


# ---- lint and render ---------------------------------------------------------------------------


def test_every_ci_scenario_is_covered():
    names = sorted(p.rsplit("/", 1)[1].removesuffix("-values.yaml") for p in CI_VALUES)
    assert names == sorted(EXPECTED_KINDS)


def test_lint_passes_strict(ci_values):
    _, values = ci_values
    report = helm.lint(str(CHART), values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_scenario_renders_expected_objects_that_validate(ci_values):
    name, values = ci_values
    docs = render(values)
    assert kinds(docs) == EXPECTED_KINDS[name]
    validated = 0
    for doc in docs:
        assert doc["metadata"]["name"].startswith("rel-outbox-relay"), doc["metadata"]
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["spec"], doc
            continue
        for version in K8S_VERSIONS:
            validate_k8s(doc, version)
        validated += 1
    assert validated >= 1


def test_validation_catches_a_broken_object():
    # Guards the test above: kubernetes-validate (strict) must reject what the API server would.
    deployment = find(render(MINIMAL), "Deployment")
    pod_spec(deployment)["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(Exception, match="pathh"):
        validate_k8s(deployment, K8S_VERSIONS[-1])


def test_defaults_are_a_two_replica_deployment():
    docs = render(MINIMAL)
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    relay = container(pod_spec(deployment), "outbox-relay")
    assert relay["args"] == ["run"]
    assert relay["image"] == "outbox-relay:0.1.0"
    service = find(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9898, "targetPort": "http", "protocol": "TCP"}
    ]
    # The Service selects the relay pods only (not the migrate Job's).
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "relay"


def test_configmap_holds_the_settings():
    data = find(render(MINIMAL), "ConfigMap")["data"]
    assert data == {
        "OUTBOX_SINK": "rabbitmq",
        "OUTBOX_AMQP_EXCHANGE": "amq.topic",
        "OUTBOX_HTTP_ADDR": "0.0.0.0:9898",
        "OUTBOX_LOG_FORMAT": "json",
        "RUST_LOG": "info",
        "OUTBOX_SHUTDOWN_TIMEOUT_SECS": "20",
    }
    kafka = find(render(values_file(CHART / "ci" / "deployment-kafka-values.yaml")), "ConfigMap")
    assert kafka["data"]["OUTBOX_SINK"] == "kafka"
    assert kafka["data"]["OUTBOX_KAFKA_BROKERS"].startswith("kafka-0.kafka:9092,")
    assert kafka["data"]["OUTBOX_MAX_ATTEMPTS"] == "5"
    assert kafka["data"]["OUTBOX_RETRY_MAX_DELAY_MS"] == "30000"
    assert kafka["data"]["OUTBOX_REPLICA_MODE"] == "lanes"
    assert "OUTBOX_AMQP_EXCHANGE" not in kafka["data"]
    timeouts = merge(
        MINIMAL,
        {"config": {"publishTimeoutMs": 5000, "stallTimeoutSecs": 0, "batchMaxBytes": 33554432}},
    )
    data = find(render(timeouts), "ConfigMap")["data"]
    assert data["OUTBOX_PUBLISH_TIMEOUT_MS"] == "5000"
    assert data["OUTBOX_STALL_TIMEOUT_SECS"] == "0"
    assert data["OUTBOX_BATCH_MAX_BYTES"] == "33554432"


# ---- replica mode ------------------------------------------------------------------------------


def test_replica_mode_default_keeps_the_binarys_lanes():
    # null: no variable, so the binary's default (lanes) applies and follows the binary.
    assert "OUTBOX_REPLICA_MODE" not in find(render(MINIMAL), "ConfigMap")["data"]


@pytest.mark.parametrize("mode", ["lanes", "single"])
def test_replica_mode_renders_outbox_replica_mode(mode):
    values = merge(MINIMAL, {"config": {"replicaMode": mode}})
    assert find(render(values), "ConfigMap")["data"]["OUTBOX_REPLICA_MODE"] == mode
    # A sidecar carries it inline, like every other setting.
    sidecar = merge(values_file(CHART / "ci" / "sidecar-native-values.yaml"), {"config": {"replicaMode": mode}})
    relay = container(sidecar_example(sidecar), "outbox-relay", "initContainers")
    assert env_of(relay)["OUTBOX_REPLICA_MODE"]["value"] == mode


@pytest.mark.parametrize("mode, words", [(None, "replica mode lanes"), ("single", "replica mode single")])
def test_notes_describe_the_replica_mode(mode, words):
    notes = render_raw(merge(MINIMAL, {"config": {"replicaMode": mode}}))["outbox-relay/templates/NOTES.txt"]
    assert words in notes and "outbox-relay status" in notes


def test_replica_mode_change_rolls_the_pods():
    assert checksum(merge(MINIMAL, {"config": {"replicaMode": "single"}})) != checksum(MINIMAL)


def test_replica_mode_is_not_a_sink_setting():
    message = helm_error(render, merge(MINIMAL, {"config": {"sinkSettings": {"REPLICA_MODE": "single"}}}))
    assert "config.sinkSettings.REPLICA_MODE: OUTBOX_REPLICA_MODE is not a sink setting" in message


# ---- sidecar -----------------------------------------------------------------------------------


def sidecar_example(values: dict) -> dict:
    return pod_spec(find(render(values), "Deployment", "-example"))


def test_native_sidecar_is_a_restartable_init_container():
    spec = sidecar_example(values_file(CHART / "ci" / "sidecar-native-values.yaml"))
    relay = container(spec, "outbox-relay", "initContainers")
    assert relay["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_plain_sidecar_is_a_regular_container():
    spec = sidecar_example(values_file(CHART / "ci" / "sidecar-plain-values.yaml"))
    assert not spec.get("initContainers")
    assert [c["name"] for c in spec["containers"]] == ["app", "outbox-relay"]
    assert "restartPolicy" not in container(spec, "outbox-relay")


def test_native_sidecar_needs_kubernetes_1_29():
    native = values_file(CHART / "ci" / "sidecar-native-values.yaml")
    message = helm_error(render, native, kube_version="v1.28.0")
    assert "sidecar.native needs Kubernetes >= 1.29" in message and "set sidecar.native=false" in message
    assert find(render(native, kube_version="v1.29.0"), "Deployment", "-example")
    plain = values_file(CHART / "ci" / "sidecar-plain-values.yaml")
    assert find(render(plain, kube_version="v1.28.0"), "Deployment", "-example")


def test_sidecar_carries_its_settings_inline():
    spec = sidecar_example(values_file(CHART / "ci" / "sidecar-native-values.yaml"))
    relay = container(spec, "outbox-relay", "initContainers")
    assert "envFrom" not in relay  # the parent chart has no ConfigMap of ours
    env = env_of(relay)
    assert env["OUTBOX_SINK"]["value"] == "rabbitmq"
    assert env["OUTBOX_HTTP_ADDR"]["value"] == "0.0.0.0:9898"
    assert env["OUTBOX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "orders-outbox"


@pytest.mark.parametrize("native", [True, False])
def test_parent_chart_example_includes_the_sidecar(tmp_path, native):
    docs = render_parent(tmp_path, {"sidecar": {"native": native}})
    # The relay chart renders no workload of its own in mode sidecar.
    workloads = [d for d in docs if d["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in workloads] == ["shop-my-app"]
    spec = pod_spec(workloads[0])
    where = "initContainers" if native else "containers"
    relay = container(spec, "outbox-relay", where)
    assert relay["image"] == "outbox-relay:0.1.0"  # the relay chart's appVersion, not my-app's
    assert (relay.get("restartPolicy") == "Always") is native
    assert env_of(relay)["OUTBOX_AMQP_EXCHANGE"]["value"] == "my-app.events"
    # The app keeps its own port named http; the relay's is distinct.
    assert {p["name"] for c in spec["containers"] + (spec.get("initContainers") or []) for p in c.get("ports", [])} == {"http", "outbox-http"}
    podmonitor = find(docs, "PodMonitor")
    assert podmonitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "my-app"}
    assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] == "outbox-http"
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            validate_k8s(doc, K8S_VERSIONS[-1])


def test_sidecar_mode_podmonitor_needs_a_selector():
    message = helm_error(
        render, merge(MINIMAL, {"mode": "sidecar", "metrics": {"podMonitor": {"enabled": True}}})
    )
    assert "metrics.podMonitor.selector" in message


# ---- probes, shutdown, security ----------------------------------------------------------------


def assert_probe(probe: dict, path: str, port_name: str) -> None:
    assert probe["httpGet"] == {"path": path, "port": port_name}


def test_deployment_probes_use_healthz_and_readyz_on_http():
    relay = container(pod_spec(find(render(MINIMAL), "Deployment")), "outbox-relay")
    assert relay["ports"] == [{"name": "http", "containerPort": 9898, "protocol": "TCP"}]
    assert_probe(relay["livenessProbe"], "/healthz", "http")
    assert_probe(relay["readinessProbe"], "/readyz", "http")


def test_sidecar_probes_use_its_own_port_and_readiness_is_opt_in():
    base = values_file(CHART / "ci" / "sidecar-native-values.yaml")
    relay = container(sidecar_example(base), "outbox-relay", "initContainers")
    assert relay["ports"] == [{"name": "outbox-http", "containerPort": 9898, "protocol": "TCP"}]
    assert_probe(relay["livenessProbe"], "/healthz", "outbox-http")
    assert "readinessProbe" not in relay  # would gate the app pod's readiness on the broker
    relay = container(
        sidecar_example(merge(base, {"sidecar": {"readinessProbe": True}})), "outbox-relay", "initContainers"
    )
    assert_probe(relay["readinessProbe"], "/readyz", "outbox-http")


def test_http_port_setting_moves_port_and_address_together():
    docs = render(merge(MINIMAL, {"http": {"port": 9100}}))
    relay = container(pod_spec(find(docs, "Deployment")), "outbox-relay")
    assert relay["ports"][0]["containerPort"] == 9100
    assert find(docs, "ConfigMap")["data"]["OUTBOX_HTTP_ADDR"] == "0.0.0.0:9100"


def test_grace_period_covers_the_drain():
    def grace(values):
        spec = pod_spec(find(render(values), "Deployment"))
        return spec["terminationGracePeriodSeconds"]

    assert grace(MINIMAL) == 30
    assert grace(merge(MINIMAL, {"config": {"shutdownTimeoutSecs": 45}})) == 55
    relay = container(pod_spec(find(render(MINIMAL), "Deployment")), "outbox-relay")
    assert "lifecycle" not in relay  # no preStop: the relay handles SIGTERM itself


@pytest.mark.parametrize("scenario", ["deployment-kafka", "sidecar-native", "sidecar-plain"])
def test_every_container_runs_locked_down(scenario):
    docs = render(values_file(CHART / "ci" / f"{scenario}-values.yaml"))
    checked = 0
    for doc in docs:
        for c in all_containers(doc):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, c["name"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            checked += 1
        if doc["kind"] in ("Deployment", "Job"):
            assert pod_spec(doc)["automountServiceAccountToken"] is False
    assert checked >= 2


def test_resources_default_small():
    relay = container(pod_spec(find(render(MINIMAL), "Deployment")), "outbox-relay")
    assert relay["resources"] == {
        "requests": {"cpu": "20m", "memory": "32Mi"},
        "limits": {"memory": "128Mi"},
    }


# ---- secrets -----------------------------------------------------------------------------------

SENTINEL = "sentinel-secret-7f3a"


@pytest.mark.parametrize("scenario", sorted(EXPECTED_KINDS))
def test_credentials_come_only_from_the_secret(scenario):
    values = merge(
        values_file(CHART / "ci" / f"{scenario}-values.yaml"),
        {
            "existingSecret": SENTINEL,
            "existingSecretKeys": {"databaseUrl": "db-key", "amqpUrl": "amqp-key"},
        },
    )
    docs = render(values)
    seen = set()
    for doc in docs:
        for c in all_containers(doc):
            for e in c.get("env") or []:
                if e["name"] in SECRET_VARS:
                    assert "value" not in e, (c["name"], e)
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == SENTINEL
                    seen.add(e["name"])
        if doc["kind"] == "ConfigMap":
            assert not SECRET_VARS & set(doc["data"]), doc["data"]
    assert "OUTBOX_DATABASE_URL" in seen
    sink = values["config"]["sink"]
    assert ("OUTBOX_AMQP_URL" in seen) is (sink == "rabbitmq")
    assert ("OUTBOX_KAFKA_PROPERTIES" in seen) is (sink == "kafka")
    text = "\n".join(render_raw(values).values())
    assert not re.search(r"(postgres(ql)?|amqps?)://", text), "a URL literal was rendered"


def test_credentials_cannot_be_given_as_plain_values():
    message = helm_error(render, merge(MINIMAL, {"config": {"databaseUrl": "postgres://u:p@db/app"}}))
    assert "additional properties 'databaseUrl' not allowed" in message
    message = helm_error(
        render, merge(MINIMAL, {"extraEnv": [{"name": "OUTBOX_AMQP_URL", "value": "amqp://u:p@mq"}]})
    )
    assert "extraEnv OUTBOX_AMQP_URL has a plain value" in message
    # valueFrom is fine, and extraEnv lands in the container.
    env = [{"name": "OUTBOX_AMQP_URL", "valueFrom": {"secretKeyRef": {"name": "other", "key": "url"}}}]
    relay = container(pod_spec(find(render(merge(MINIMAL, {"config": {"sink": "stdout"}, "extraEnv": env})), "Deployment")), "outbox-relay")
    assert env_of(relay)["OUTBOX_AMQP_URL"]["valueFrom"]["secretKeyRef"]["name"] == "other"


def test_missing_secret_fails_with_a_clear_message():
    assert "set existingSecret to the name of a Secret" in helm_error(render, {})


# ---- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"config": {"sink": "mqtt"}}, "at '/config/sink': value must be one of 'kafka', 'rabbitmq', 'stdout'"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"config": {"logFormat": "xml"}}, "at '/config/logFormat': value must be one of 'text', 'json'"),
        ({"mode": "daemonset"}, "at '/mode': value must be one of"),
        ({"sidecar": {"native": "yes"}}, "at '/sidecar/native': got string, want boolean"),
        ({"prometheusRule": {"lagHigh": {"for": "five minutes"}}}, "at '/prometheusRule/lagHigh/for'"),
        ({"config": {"kafkaTopicTemplate": "prod.events"}}, "at '/config/kafkaTopicTemplate'"),
        ({"config": {"replicaMode": "active-passive"}}, "at '/config/replicaMode': value must be one of 'lanes', 'single'"),
    ],
)
def test_schema_rejects_bad_values(values, message):
    error = helm_error(render, merge(MINIMAL, values))
    assert "values don't meet the specifications of the schema" in error
    assert message in error


def test_kafka_needs_brokers():
    message = helm_error(render, merge(MINIMAL, {"config": {"sink": "kafka"}}))
    assert "config.kafkaBrokers" in message


def test_schema_and_values_describe_the_same_keys():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = load_yaml((CHART / "values.yaml").read_text())

    def walk(node_schema: dict, node_values: dict, path: str) -> None:
        props = node_schema.get("properties")
        if props is None:
            return  # free-form Kubernetes object (resources, securityContext, ...)
        assert node_schema.get("additionalProperties") is False, path
        missing = set(props) - set(node_values) - {"global"}
        assert not missing, f"{path}: in the schema, not in values.yaml: {missing}"
        for key, value in node_values.items():
            assert key in props, f"{path}.{key} is not in the schema"
            if isinstance(value, dict):
                walk(props[key], value, f"{path}.{key}")

    walk(schema, values, "")


def test_every_values_key_has_a_comment():
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    undocumented = []

    def walk(node: yaml.MappingNode, node_schema: dict, path: str) -> None:
        props = node_schema.get("properties")
        if props is None:
            return
        for key_node, value_node in node.value:
            line = key_node.start_mark.line
            above = lines[line - 1].strip() if line > 0 else ""
            if not above.startswith("#"):
                undocumented.append(f"{path}.{key_node.value}")
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, props.get(key_node.value, {}), f"{path}.{key_node.value}")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), schema, "")
    assert undocumented == []


# ---- config checksum ---------------------------------------------------------------------------


def checksum(values: dict) -> str:
    deployment = find(render(values), "Deployment")
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_follows_the_configmap():
    base = checksum(MINIMAL)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(merge(MINIMAL, {"config": {"logFormat": "text"}})) != base
    assert checksum(merge(MINIMAL, {"config": {"maxAttempts": 3}})) != base
    # Not a hash of everything: a change outside the ConfigMap leaves it alone.
    assert checksum(merge(MINIMAL, {"replicaCount": 5})) == base


# ---- optional objects --------------------------------------------------------------------------


def test_migrate_job_is_a_pre_install_hook_with_inline_settings():
    docs = render(values_file(CHART / "ci" / "deployment-kafka-values.yaml"))
    job = find(docs, "Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    migrate = container(pod_spec(job), "migrate")
    assert migrate["args"] == ["migrate"]
    # A pre-install hook runs before the ConfigMap exists.
    assert "envFrom" not in migrate
    env = env_of(migrate)
    assert env["OUTBOX_SINK"]["value"] == "kafka"
    assert env["OUTBOX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "outbox-relay-credentials"
    # Its pods are not relay pods: the Service/PDB/monitors do not select them.
    relay_selector = find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not relay_selector.items() <= job_labels.items()


def test_monitors_and_pdb():
    docs = render(values_file(CHART / "ci" / "deployment-kafka-values.yaml"))
    selector = find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    sm = find(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    pm = find(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == selector
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
