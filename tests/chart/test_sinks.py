"""Sinks in the chart: the default sink's generic settings (config.sinkSettings,
existingSecretKeys.sinkSettings), named sinks (sinks -> OUTBOX_SINKS, OUTBOX_SINK_<NAME>_*), routes
(config.routes -> OUTBOX_ROUTES), secretFiles, and the checks that refuse a bad combination or a
credential given as a plain value. Every env is checked in both modes: the Deployment (ConfigMap +
secret env) and the sidecar (everything inline)."""

from __future__ import annotations

import re

import helm_python as helm
import pytest
from helpers import (
    CHART,
    K8S_VERSIONS,
    MINIMAL,
    container,
    env_of,
    find,
    helm_error,
    merge,
    pod_spec,
    render,
    render_parent,
    render_raw,
    validate_k8s,
    values_file,
)

EXAMPLE = CHART / "examples" / "orders-rabbitmq-audit-webhook-values.yaml"

# The chart's sink kinds, as its templates list them (src/sink/chart.rs checks that they are the
# relay's KINDS), in the order its messages name them.
SINK_KINDS = ", ".join(
    re.findall(
        r'"([a-z]+)"',
        re.search(r"\$kinds := list ([^-]*)-", (CHART / "templates" / "_helpers.tpl").read_text()).group(1),
    )
)
SECRET = MINIMAL["existingSecret"]
MODES = ["deployment", "sidecar-example"]

# Variables that hold a credential, as the chart recognises them (see isCredential).
CREDENTIAL = re.compile(r"^(OUTBOX_.*_(URL|SECRET|PASSWORD|TOKEN)|OUTBOX_(SINK_.*_)?KAFKA_PROPERTIES)$")


def relay_env(values: dict, mode: str) -> dict[str, str | tuple[str, str]]:
    """The relay container's environment: name -> plain value, or -> (secret, key) for a
    secretKeyRef. In mode deployment the plain values come from the ConfigMap (envFrom)."""
    docs = render(merge(values, {"mode": mode}))
    if mode == "deployment":
        relay = container(pod_spec(find(docs, "Deployment")), "outbox-relay")
        assert relay["envFrom"] == [{"configMapRef": {"name": "rel-outbox-relay"}}]
        out: dict = dict(find(docs, "ConfigMap")["data"])
    else:
        spec = pod_spec(find(docs, "Deployment", "-example"))
        relay = container(spec, "outbox-relay", "initContainers")
        assert "envFrom" not in relay
        out = {}
    names = [e["name"] for e in relay["env"]]
    assert len(names) == len(set(names)), names
    for e in relay["env"]:
        assert e["name"] not in out, f"{e['name']} twice"
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = (ref["name"], ref["key"])
        else:
            out[e["name"]] = e["value"]
    return out


def secret(key: str) -> tuple[str, str]:
    return (SECRET, key)


REDIS = merge(
    MINIMAL,
    {
        "config": {
            "sink": "redis",
            "sinkSettings": {"REDIS_STREAM_TEMPLATE": "events.{topic}", "REDIS_MAXLEN": 1000000},
        },
        "existingSecretKeys": {"sinkSettings": {"REDIS_URL": "redis-url"}},
    },
)

NAMED = merge(
    MINIMAL,
    {
        "config": {"routes": ["audit.*=audit", "billing.*=zeta", "orders.*=rabbitmq", "*.log=b-x"]},
        # Not in name order: OUTBOX_SINKS is sorted anyway.
        "sinks": {
            "zeta": {"kind": "kafka", "settings": {"KAFKA_BROKERS": "kafka:9092"}},
            "audit": {
                "kind": "http",
                "settings": {"WEBHOOK_TIMEOUT_MS": "5000"},
                "secretKeys": {"WEBHOOK_URL": "audit-webhook-url", "WEBHOOK_SECRET": "audit-webhook-secret"},
            },
            "b-x": {"kind": "stdout"},
        },
    },
)


# ---- the default sink's settings ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_default_sink_settings_render_plain_and_secret(mode):
    env = relay_env(REDIS, mode)
    assert env["OUTBOX_SINK"] == "redis"
    assert env["OUTBOX_REDIS_STREAM_TEMPLATE"] == "events.{topic}"
    assert env["OUTBOX_REDIS_MAXLEN"] == "1000000"  # a number, never 1e+06
    assert env["OUTBOX_REDIS_URL"] == secret("redis-url")
    # Nothing of rabbitmq (the default kind in values.yaml) is left over.
    assert "OUTBOX_AMQP_URL" not in env and "OUTBOX_AMQP_EXCHANGE" not in env


@pytest.mark.parametrize("mode", MODES)
def test_generic_settings_win_over_the_specific_values(mode):
    values = merge(
        MINIMAL,
        {
            "config": {"amqpExchange": "old", "sinkSettings": {"AMQP_EXCHANGE": "new"}},
            "existingSecretKeys": {"sinkSettings": {"AMQP_URL": "other-amqp-key"}},
        },
    )
    env = relay_env(values, mode)  # relay_env fails on a duplicate variable
    assert env["OUTBOX_AMQP_EXCHANGE"] == "new"
    assert env["OUTBOX_AMQP_URL"] == secret("other-amqp-key")


@pytest.mark.parametrize("mode", MODES)
def test_specific_values_still_work(mode):
    env = relay_env(merge(MINIMAL, {"config": {"amqpExchange": "events"}}), mode)
    assert env["OUTBOX_AMQP_EXCHANGE"] == "events"
    assert env["OUTBOX_AMQP_URL"] == secret("amqp-url")
    kafka = merge(
        MINIMAL,
        {
            "config": {"sink": "kafka", "kafkaBrokers": "k:9092", "kafkaTopicTemplate": "p.{topic}"},
            "existingSecretKeys": {"kafkaProperties": "kafka-properties"},
        },
    )
    env = relay_env(kafka, mode)
    assert env["OUTBOX_KAFKA_BROKERS"] == "k:9092"
    assert env["OUTBOX_KAFKA_TOPIC_TEMPLATE"] == "p.{topic}"
    assert env["OUTBOX_KAFKA_PROPERTIES"] == secret("kafka-properties")


def test_kafka_brokers_may_come_from_sink_settings():
    values = merge(MINIMAL, {"config": {"sink": "kafka", "sinkSettings": {"KAFKA_BROKERS": "k:9092"}}})
    assert relay_env(values, "deployment")["OUTBOX_KAFKA_BROKERS"] == "k:9092"


# ---- named sinks and routes --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_named_sinks_and_routes(mode):
    env = relay_env(NAMED, mode)
    assert env["OUTBOX_SINK"] == "rabbitmq"
    assert env["OUTBOX_SINKS"] == "audit=http,b-x=stdout,zeta=kafka"  # sorted by name
    assert env["OUTBOX_ROUTES"] == "audit.*=audit,billing.*=zeta,orders.*=rabbitmq,*.log=b-x"  # in order
    assert env["OUTBOX_SINK_AUDIT_WEBHOOK_TIMEOUT_MS"] == "5000"
    assert env["OUTBOX_SINK_AUDIT_WEBHOOK_URL"] == secret("audit-webhook-url")
    assert env["OUTBOX_SINK_AUDIT_WEBHOOK_SECRET"] == secret("audit-webhook-secret")
    assert env["OUTBOX_SINK_ZETA_KAFKA_BROKERS"] == "kafka:9092"
    assert not [n for n in env if n.startswith("OUTBOX_SINK_B_X_")]


@pytest.mark.parametrize("mode", MODES)
def test_named_sinks_without_a_default_sink(mode):
    values = merge(NAMED, {"config": {"sink": "", "routes": ["audit.*=audit", "*=zeta", "x=b-x"]}})
    env = relay_env(values, mode)
    assert "OUTBOX_SINK" not in env
    assert "OUTBOX_AMQP_URL" not in env and "OUTBOX_AMQP_EXCHANGE" not in env
    assert env["OUTBOX_SINKS"] == "audit=http,b-x=stdout,zeta=kafka"
    assert env["OUTBOX_ROUTES"] == "audit.*=audit,*=zeta,x=b-x"


def test_no_sinks_no_routes_render_nothing_new():
    data = find(render(MINIMAL), "ConfigMap")["data"]
    assert "OUTBOX_SINKS" not in data and "OUTBOX_ROUTES" not in data


@pytest.mark.parametrize("mode", MODES)
def test_configmap_and_plain_env_never_hold_a_credential(mode):
    values = merge(NAMED, REDIS)
    values = merge(values, {"config": {"routes": NAMED["config"]["routes"][:2] + ["*.log=b-x"]}})
    env = relay_env(values, mode)
    credentials = {n for n in env if CREDENTIAL.match(n)}
    assert credentials == {
        "OUTBOX_DATABASE_URL", "OUTBOX_REDIS_URL", "OUTBOX_SINK_AUDIT_WEBHOOK_URL",
        "OUTBOX_SINK_AUDIT_WEBHOOK_SECRET",
    }
    for name in credentials:
        assert isinstance(env[name], tuple), f"{name} is a plain value"
    docs = render(merge(values, {"mode": mode}))
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not [n for n in doc["data"] if CREDENTIAL.match(n)], doc["data"]


# ---- checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        pytest.param(
            {"config": {"sink": ""}},
            f"no sink: set config.sink (the default sink: {SINK_KINDS}) or name sinks in sinks",
            id="no-sink",
        ),
        pytest.param(
            {"sinks": {"Audit": {"kind": "http"}}},
            "sinks.Audit: a sink name must be lower-case letters, digits, '_' or '-'",
            id="sink-name",
        ),
        pytest.param(
            {"sinks": {"audit.v2": {"kind": "http"}}},
            "sinks.audit.v2: a sink name must be lower-case letters, digits, '_' or '-'",
            id="sink-name-dot",
        ),
        pytest.param(
            {"sinks": {"audit": {"kind": "http"}}, "config": {"routes": ["orders.*=rabbitmq"]}},
            'sinks.audit has no route: add one to config.routes, e.g. "audit.*=audit"',
            id="unrouted-sink",
        ),
        pytest.param(
            {"sinks": {"audit": {"kind": "http"}}, "config": {"routes": ["audit.*=audit", "x.*=audits"]}},
            'config.routes: route "x.*=audits" names sink "audits", which is neither the default sink (config.sink: "rabbitmq") nor one of sinks (audit)',
            id="route-to-unknown-sink",
        ),
        pytest.param(
            {"config": {"routes": ["orders.*=kafka"]}},
            'config.routes: route "orders.*=kafka" names sink "kafka", which is neither the default sink (config.sink: "rabbitmq") nor one of sinks (none)',
            id="route-to-other-kind",
        ),
        pytest.param(
            {"sinks": {"rabbitmq": {"kind": "http"}}, "config": {"routes": ["a=rabbitmq"]}},
            "sinks.rabbitmq: the default sink (config.sink) is already named rabbitmq",
            id="name-of-default-sink",
        ),
        pytest.param(
            {"sinks": {"a-b": {"kind": "stdout"}, "a_b": {"kind": "stdout"}}, "config": {"routes": ["a=a-b", "b=a_b"]}},
            "sinks.a-b and sinks.a_b both have the variables OUTBOX_SINK_A_B_*",
            id="same-variables",
        ),
        pytest.param(
            {"config": {"sink": "redis", "sinkSettings": {"REDIS_URL": "redis://:pw@redis:6379"}}},
            "config.sinkSettings.REDIS_URL is a credential and is never taken as a plain value; put it in existingSecret and set existingSecretKeys.sinkSettings.REDIS_URL",
            id="plain-redis-url",
        ),
        pytest.param(
            {"config": {"sinkSettings": {"AMQP_URL": "amqp://u:p@mq"}}},
            "config.sinkSettings.AMQP_URL is a credential",
            id="plain-amqp-url",
        ),
        pytest.param(
            {"config": {"sink": "kafka", "kafkaBrokers": "k:9092", "sinkSettings": {"KAFKA_PROPERTIES": "sasl.password=x"}}},
            "config.sinkSettings.KAFKA_PROPERTIES is a credential",
            id="plain-kafka-properties",
        ),
        pytest.param(
            {"sinks": {"audit": {"kind": "http", "settings": {"WEBHOOK_URL": "https://h/?token=x"}}}, "config": {"routes": ["a=audit"]}},
            "sinks.audit.settings.WEBHOOK_URL is a credential and is never taken as a plain value; put it in existingSecret and set sinks.audit.secretKeys.WEBHOOK_URL",
            id="plain-webhook-url",
        ),
        pytest.param(
            {"sinks": {"audit": {"kind": "http", "settings": {"WEBHOOK_SECRET": "whsec_x"}}}, "config": {"routes": ["a=audit"]}},
            "sinks.audit.settings.WEBHOOK_SECRET is a credential",
            id="plain-webhook-secret",
        ),
        pytest.param(
            {"sinks": {"ev": {"kind": "nats", "settings": {"NATS_URL": "nats://u:p@nats"}}}, "config": {"routes": ["a=ev"]}},
            "sinks.ev.settings.NATS_URL is a credential",
            id="plain-nats-url",
        ),
        pytest.param(
            {"extraEnv": [{"name": "OUTBOX_SINK_AUDIT_WEBHOOK_SECRET", "value": "whsec_x"}]},
            "extraEnv OUTBOX_SINK_AUDIT_WEBHOOK_SECRET has a plain value",
            id="plain-extra-env-named",
        ),
        pytest.param(
            {"extraEnv": [{"name": "OUTBOX_REDIS_URL", "value": "redis://:pw@r"}]},
            "extraEnv OUTBOX_REDIS_URL has a plain value",
            id="plain-extra-env-default",
        ),
        pytest.param(
            {"config": {"sink": "", "sinkSettings": {"REDIS_MAXLEN": "1"}}, "sinks": {"a": {"kind": "stdout"}}, },
            "config.sinkSettings / existingSecretKeys.sinkSettings are settings of the default sink, but config.sink is empty",
            id="default-settings-without-default-sink",
        ),
        pytest.param(
            {"config": {"sinkSettings": {"LOG_FORMAT": "text"}}},
            "config.sinkSettings.LOG_FORMAT: OUTBOX_LOG_FORMAT is not a sink setting",
            id="reserved-setting",
        ),
        pytest.param(
            {"existingSecretKeys": {"sinkSettings": {"SINK_AUDIT_WEBHOOK_URL": "k"}}},
            "existingSecretKeys.sinkSettings.SINK_AUDIT_WEBHOOK_URL: OUTBOX_SINK_AUDIT_WEBHOOK_URL is not a sink setting",
            id="named-sink-variable-as-default-setting",
        ),
        pytest.param(
            {"config": {"sinkSettings": {"redis_maxlen": "1"}}},
            "config.sinkSettings.redis_maxlen: a setting name is upper-case letters, digits and '_'",
            id="setting-name",
        ),
        pytest.param(
            {"sinks": {"a": {"kind": "http", "secretKeys": {"webhook-url": "k"}}}, "config": {"routes": ["a=a"]}},
            "sinks.a.secretKeys.webhook-url: a setting name is upper-case letters, digits and '_'",
            id="named-setting-name",
        ),
        pytest.param(
            {"config": {"sinkSettings": {"AMQP_EXCHANGE": "x"}}, "existingSecretKeys": {"sinkSettings": {"AMQP_EXCHANGE": "k"}}},
            "AMQP_EXCHANGE is in both config.sinkSettings and existingSecretKeys.sinkSettings",
            id="plain-and-secret-default",
        ),
        pytest.param(
            {"sinks": {"a": {"kind": "http", "settings": {"WEBHOOK_TIMEOUT_MS": "1"}, "secretKeys": {"WEBHOOK_TIMEOUT_MS": "k"}}}, "config": {"routes": ["a=a"]}},
            "WEBHOOK_TIMEOUT_MS is in both sinks.a.settings and sinks.a.secretKeys",
            id="plain-and-secret-named",
        ),
        pytest.param(
            {"config": {"sink": "kafka"}, "sinks": {"a": {"kind": "stdout"}}},
            "config.sink is kafka, so set config.kafkaBrokers",
            id="kafka-brokers",
        ),
        pytest.param(
            {"secretFiles": [{"mountPath": "/etc/x"}]},
            "secretFiles[0] (mountPath /etc/x): set exactly one of key",
            id="secret-file-without-source",
        ),
        pytest.param(
            {"secretFiles": [{"key": "k", "secretName": "s", "mountPath": "/etc/x"}]},
            "secretFiles[0] (mountPath /etc/x): set exactly one of key",
            id="secret-file-with-two-sources",
        ),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_checks_refuse_with_a_message_naming_the_value(values, message, mode):
    error = helm_error(render, merge(merge(MINIMAL, {"mode": mode}), values))
    assert "outbox-relay: " + message in error


@pytest.mark.parametrize(
    "values, message",
    [
        ({"sinks": {"audit": {"kind": "mqtt"}}}, "at '/sinks/audit/kind': value must be one of "
         + ", ".join(f"'{kind}'" for kind in SINK_KINDS.split(", "))),
        ({"sinks": {"audit": {}}}, "at '/sinks/audit': missing property 'kind'"),
        ({"sinks": {"audit": {"kind": "http", "url": "x"}}}, "at '/sinks/audit': additional properties 'url' not allowed"),
        ({"sinks": {"audit": {"kind": "http", "settings": {"WEBHOOK_TIMEOUT_MS": {"ms": 1}}}}}, "at '/sinks/audit/settings/WEBHOOK_TIMEOUT_MS'"),
        ({"sinks": {"audit": {"kind": "http", "secretKeys": {"WEBHOOK_URL": ""}}}}, "at '/sinks/audit/secretKeys/WEBHOOK_URL'"),
        ({"config": {"sink": "mqtt"}}, "at '/config/sink': value must be one of"),
        ({"config": {"routes": ["audit.*"]}}, "at '/config/routes/0'"),
        ({"config": {"routes": [" =audit"]}}, "at '/config/routes/0'"),
        ({"config": {"routes": ["a.*=audit,b.*=audit"]}}, "at '/config/routes/0'"),
        ({"config": {"routes": "audit.*=audit"}}, "at '/config/routes': got string, want array"),
        ({"config": {"sinkSettings": {"REDIS_MAXLEN": 1.5}}}, "at '/config/sinkSettings/REDIS_MAXLEN'"),
        ({"existingSecretKeys": {"sinkSettings": {"REDIS_URL": 3}}}, "at '/existingSecretKeys/sinkSettings/REDIS_URL'"),
        ({"secretFiles": [{"key": "k"}]}, "at '/secretFiles/0': missing property 'mountPath'"),
        ({"secretFiles": [{"key": "k", "mountPath": "relative"}]}, "at '/secretFiles/0/mountPath'"),
    ],
)
def test_schema_rejects_bad_sink_values(values, message):
    error = helm_error(render, merge(MINIMAL, values))
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize("kind", ["stdout", "rabbitmq", "kafka", "redis", "nats", "http"])
def test_every_known_kind_is_accepted(kind):
    values = merge(MINIMAL, {"sinks": {"s": {"kind": kind}}, "config": {"routes": ["t=s"]}})
    assert relay_env(values, "deployment")["OUTBOX_SINKS"] == f"s={kind}"
    if kind != "rabbitmq":
        default = merge(MINIMAL, {"config": {"sink": kind, "sinkSettings": {"KAFKA_BROKERS": "k:9092"} if kind == "kafka" else {}}})
        assert relay_env(default, "deployment")["OUTBOX_SINK"] == kind


# ---- secret files ------------------------------------------------------------------------------

FILES = merge(
    MINIMAL,
    {
        "config": {"sink": "nats", "sinkSettings": {"NATS_CREDS": "/etc/outbox-relay/nats/relay.creds"}},
        "existingSecretKeys": {"sinkSettings": {"NATS_URL": "nats-url"}},
        "secretFiles": [
            {"key": "nats-creds", "mountPath": "/etc/outbox-relay/nats/relay.creds"},
            {"secretName": "webhook-ca", "mountPath": "/etc/outbox-relay/ca"},
        ],
    },
)
WANT_VOLUMES = [
    {
        "name": "outbox-relay-secret-file-0",
        "secret": {"secretName": SECRET, "items": [{"key": "nats-creds", "path": "relay.creds"}]},
    },
    {"name": "outbox-relay-secret-file-1", "secret": {"secretName": "webhook-ca"}},
]
WANT_MOUNTS = [
    {"name": "outbox-relay-secret-file-0", "mountPath": "/etc/outbox-relay/nats/relay.creds", "readOnly": True, "subPath": "relay.creds"},
    {"name": "outbox-relay-secret-file-1", "mountPath": "/etc/outbox-relay/ca", "readOnly": True},
]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_secret_files_are_mounted_read_only(mode, native):
    docs = render(merge(FILES, {"mode": mode, "sidecar": {"native": native}}))
    workload = find(docs, "Deployment")
    spec = pod_spec(workload)
    where = "initContainers" if mode != "deployment" and native else "containers"
    relay = container(spec, "outbox-relay", where)
    assert spec["volumes"] == WANT_VOLUMES
    assert relay["volumeMounts"] == WANT_MOUNTS
    for c in spec["containers"]:
        if c["name"] == "app":
            assert "volumeMounts" not in c
    for version in K8S_VERSIONS:
        validate_k8s(workload, version)
    assert relay_env(FILES, mode)["OUTBOX_NATS_CREDS"] == "/etc/outbox-relay/nats/relay.creds"


def test_no_secret_files_no_volumes():
    spec = pod_spec(find(render(MINIMAL), "Deployment"))
    assert "volumes" not in spec
    assert "volumeMounts" not in container(spec, "outbox-relay")


def test_parent_chart_example_adds_the_sidecar_volumes(tmp_path):
    relay_values = {k: v for k, v in FILES.items() if k != "existingSecret"}
    docs = render_parent(tmp_path, relay_values)
    spec = pod_spec(find(docs, "Deployment", "-my-app"))
    # The parent's values name the Secret my-app-outbox.
    assert spec["volumes"][0]["secret"]["secretName"] == "my-app-outbox"
    assert [v["name"] for v in spec["volumes"]] == [v["name"] for v in WANT_VOLUMES]
    assert container(spec, "outbox-relay", "initContainers")["volumeMounts"] == WANT_MOUNTS
    validate_k8s(find(docs, "Deployment", "-my-app"), K8S_VERSIONS[-1])


def test_parent_chart_without_secret_files_has_no_volumes(tmp_path):
    spec = pod_spec(find(render_parent(tmp_path), "Deployment", "-my-app"))
    assert "volumes" not in spec


# ---- the example -------------------------------------------------------------------------------


def test_example_orders_to_rabbitmq_audit_to_a_signed_webhook():
    values = values_file(EXAMPLE)
    report = helm.lint(str(CHART), values, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    docs = render(values)
    for doc in docs:
        if doc["kind"] not in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
            for version in K8S_VERSIONS:
                validate_k8s(doc, version)
    env = relay_env(values, "deployment")
    assert env["OUTBOX_SINK"] == "rabbitmq"
    assert env["OUTBOX_AMQP_EXCHANGE"] == "orders"
    assert env["OUTBOX_AMQP_URL"] == ("outbox-relay-credentials", "amqp-url")
    assert env["OUTBOX_SINKS"] == "audit=http"
    assert env["OUTBOX_ROUTES"] == "audit.*=audit,orders.*=rabbitmq"
    assert env["OUTBOX_SINK_AUDIT_WEBHOOK_URL"] == ("outbox-relay-credentials", "audit-webhook-url")
    assert env["OUTBOX_SINK_AUDIT_WEBHOOK_SECRET"] == ("outbox-relay-credentials", "audit-webhook-secret")
    assert env["OUTBOX_SINK_AUDIT_WEBHOOK_TIMEOUT_MS"] == "5000"
    # The same as a sidecar, and in the migrate Job.
    assert relay_env(values, "sidecar-example") == env
    migrate = container(pod_spec(find(docs, "Job", "-migrate")), "migrate")
    assert env_of(migrate)["OUTBOX_SINKS"]["value"] == "audit=http"
    assert "secretKeyRef" in env_of(migrate)["OUTBOX_SINK_AUDIT_WEBHOOK_SECRET"]["valueFrom"]
    text = "\n".join(render_raw(values).values())
    assert not re.search(r"(postgres(ql)?|amqps?|https?)://", text), "a URL literal was rendered"
