"""The shipped CRD schemas and the strict offline validator in tests/crd_schemas.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from crd_schemas import (
    SCHEMA_ROOT,
    UnknownCustomResourceError,
    has_schema,
    known_kinds,
    validate_custom,
)
from jsonschema import Draft202012Validator

SCALED_OBJECT: dict[str, Any] = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "synthguard-worker", "namespace": "synthguard"},
    "spec": {
        "scaleTargetRef": {"name": "synthguard-worker"},
        "pollingInterval": 15,
        "cooldownPeriod": 300,
        "minReplicaCount": 1,
        "maxReplicaCount": 6,
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": 300,
                        "selectPolicy": "Min",
                        "policies": [
                            {"type": "Percent", "value": 50, "periodSeconds": 60}
                        ],
                    },
                }
            }
        },
        "triggers": [
            {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": "synthguard-kafka-bootstrap:9092",
                    "consumerGroup": "synthguard-detector",
                    "topic": "image-uploads",
                    "lagThreshold": "50",
                    "activationLagThreshold": "5",
                    "offsetResetPolicy": "earliest",
                    "allowIdleConsumers": "false",
                },
                "authenticationRef": {"name": "synthguard-kafka-auth"},
            }
        ],
    },
}

TRIGGER_AUTHENTICATION: dict[str, Any] = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "TriggerAuthentication",
    "metadata": {"name": "synthguard-kafka-auth"},
    "spec": {
        "secretTargetRef": [
            {"parameter": "sasl", "name": "kafka-credentials", "key": "mechanism"},
            {"parameter": "username", "name": "kafka-credentials", "key": "user"},
            {"parameter": "password", "name": "kafka-credentials", "key": "pass"},
        ]
    },
}

KAFKA_TOPIC: dict[str, Any] = {
    "apiVersion": "kafka.strimzi.io/v1beta2",
    "kind": "KafkaTopic",
    "metadata": {
        "name": "image-uploads",
        "labels": {"strimzi.io/cluster": "synthguard-kafka"},
    },
    "spec": {
        "topicName": "image-uploads",
        "partitions": 6,
        "replicas": 3,
        "config": {
            "cleanup.policy": "delete",
            "retention.ms": 604800000,
            "min.insync.replicas": "2",
        },
    },
}

SERVICE_MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "synthguard-triton", "labels": {"release": "prometheus"}},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "triton"}},
        "namespaceSelector": {"matchNames": ["synthguard"]},
        "endpoints": [
            {"port": "metrics", "path": "/metrics", "interval": "15s"},
            {"targetPort": 8002, "scheme": "http", "scrapeTimeout": "10s"},
        ],
    },
}

POD_MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PodMonitor",
    "metadata": {"name": "synthguard-worker"},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "synthguard-worker"}},
        "podMetricsEndpoints": [
            {"port": "metrics", "path": "/metrics", "interval": "30s"}
        ],
    },
}

PROMETHEUS_RULE: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "synthguard-alerts"},
    "spec": {
        "groups": [
            {
                "name": "synthguard.rules",
                "rules": [
                    {
                        "record": "synthguard:verdicts:rate5m",
                        "expr": "sum(rate(synthguard_verdicts_total[5m]))",
                    },
                    {
                        "alert": "SynthGuardConsumerLagHigh",
                        "expr": "sum(kafka_consumergroup_lag) > 1000",
                        "for": "10m",
                        "labels": {"severity": "warning"},
                        "annotations": {"summary": "detector is falling behind"},
                    },
                ],
            }
        ]
    },
}

VALID = {
    "ScaledObject": SCALED_OBJECT,
    "TriggerAuthentication": TRIGGER_AUTHENTICATION,
    "KafkaTopic": KAFKA_TOPIC,
    "ServiceMonitor": SERVICE_MONITOR,
    "PodMonitor": POD_MONITOR,
    "PrometheusRule": PROMETHEUS_RULE,
}


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)


def _only_error(doc: dict[str, Any]) -> str:
    errors = validate_custom(doc)
    assert len(errors) == 1, errors
    return errors[0]


# --- the shipped schemas -------------------------------------------------------


def test_known_kinds_cover_what_deploy_uses() -> None:
    assert set(known_kinds()) >= {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }


def _objects_missing_strictness(node: Any, path: str) -> list[str]:
    if isinstance(node, list):
        return [
            bad
            for i, sub in enumerate(node)
            for bad in _objects_missing_strictness(sub, f"{path}[{i}]")
        ]
    if not isinstance(node, dict):
        return []
    bad = []
    if (
        "properties" in node
        and "additionalProperties" not in node
        and node.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        bad.append(path)
    for key, sub in node.items():
        if key not in ("const", "enum", "default"):
            bad += _objects_missing_strictness(sub, f"{path}/{key}")
    return bad


@pytest.mark.parametrize(
    "path", sorted(SCHEMA_ROOT.glob("*/*.json")), ids=lambda p: p.name
)
def test_shipped_schema_is_valid_and_strict(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert _objects_missing_strictness(schema, "") == []
    assert "x-kubernetes-int-or-string" not in path.read_text(encoding="utf-8")
    assert path.parent.name == schema["properties"]["apiVersion"]["const"].split("/")[0]


# --- accepts -------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(VALID))
def test_accepts_realistic_objects(kind: str) -> None:
    assert validate_custom(_copy(VALID[kind])) == []


def test_accepts_kafka_topic_v1_and_arbitrary_topic_config() -> None:
    doc = _copy(KAFKA_TOPIC)
    doc["apiVersion"] = "kafka.strimzi.io/v1"
    doc["spec"]["config"]["cleanup.policy"] = "compact"
    doc["spec"]["config"]["any.future.broker.setting"] = {"nested": True}
    assert validate_custom(doc) == []


def test_accepts_int_or_string_target_port_as_either() -> None:
    doc = _copy(SERVICE_MONITOR)
    doc["spec"]["endpoints"] = [{"targetPort": "metrics"}, {"targetPort": 8002}]
    assert validate_custom(doc) == []


# --- rejects, naming the field --------------------------------------------------


def test_rejects_misspelt_top_level_spec_field() -> None:
    doc = _copy(SCALED_OBJECT)
    doc["spec"]["maxReplicaCont"] = doc["spec"].pop("maxReplicaCount")
    error = _only_error(doc)
    assert 'unknown field "spec.maxReplicaCont"' in error
    assert 'ScaledObject keda.sh/v1alpha1 "synthguard-worker"' in error


def test_rejects_misspelt_nested_field() -> None:
    doc = _copy(SCALED_OBJECT)
    hpa = doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    hpa["behaviour"] = hpa.pop("behavior")
    error = _only_error(doc)
    assert 'unknown field "spec.advanced.horizontalPodAutoscalerConfig.behaviour"' in (
        error
    )


def test_rejects_unknown_field_in_list_item() -> None:
    doc = _copy(SERVICE_MONITOR)
    doc["spec"]["endpoints"][0]["scrapeInterval"] = "15s"
    assert 'unknown field "spec.endpoints[0].scrapeInterval"' in _only_error(doc)


def test_rejects_unknown_top_level_field() -> None:
    doc = _copy(KAFKA_TOPIC)
    doc["specs"] = doc["spec"]
    assert 'unknown field "specs"' in _only_error(doc)


def test_rejects_wrong_type() -> None:
    doc = _copy(KAFKA_TOPIC)
    doc["spec"]["partitions"] = "six"
    error = _only_error(doc)
    assert "spec.partitions" in error
    assert "'six' is not of type 'integer'" in error


def test_rejects_non_string_kafka_trigger_metadata() -> None:
    doc = _copy(SCALED_OBJECT)
    doc["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 50
    error = _only_error(doc)
    assert "spec.triggers[0].metadata.lagThreshold" in error
    assert "is not of type 'string'" in error


def test_rejects_value_outside_bounds_and_enum() -> None:
    topic = _copy(KAFKA_TOPIC)
    topic["spec"]["replicas"] = 0
    assert "spec.replicas: 0 is less than the minimum of 1" in _only_error(topic)
    monitor = _copy(SERVICE_MONITOR)
    monitor["spec"]["endpoints"][1]["scheme"] = "grpc"
    assert "spec.endpoints[1].scheme" in _only_error(monitor)


@pytest.mark.parametrize(
    ("kind", "drop", "field"),
    [
        ("ScaledObject", ("spec", "scaleTargetRef"), "spec.scaleTargetRef"),
        ("ScaledObject", ("spec", "triggers", 0, "type"), "spec.triggers[0].type"),
        ("ServiceMonitor", ("spec", "selector"), "spec.selector"),
        ("ServiceMonitor", ("spec", "endpoints"), "spec.endpoints"),
        ("PodMonitor", ("spec", "selector"), "spec.selector"),
        (
            "PrometheusRule",
            ("spec", "groups", 0, "rules", 1, "expr"),
            "spec.groups[0].rules[1].expr",
        ),
        ("PrometheusRule", ("spec",), "spec"),
    ],
)
def test_rejects_missing_required_field(
    kind: str, drop: tuple[str | int, ...], field: str
) -> None:
    doc = _copy(VALID[kind])
    parent: Any = doc
    for key in drop[:-1]:
        parent = parent[key]
    del parent[drop[-1]]
    assert f'missing required field "{field}"' in _only_error(doc)


def test_reports_every_error() -> None:
    doc = _copy(SCALED_OBJECT)
    doc["spec"]["maxReplicaCont"] = 3
    doc["spec"]["minReplicaCount"] = "1"
    del doc["spec"]["scaleTargetRef"]
    errors = validate_custom(doc)
    assert len(errors) == 3, errors
    joined = "\n".join(errors)
    for field in ("spec.maxReplicaCont", "spec.minReplicaCount", "spec.scaleTargetRef"):
        assert field in joined


# --- dispatch ------------------------------------------------------------------


def test_has_schema() -> None:
    assert has_schema("keda.sh/v1alpha1", "ScaledObject")
    assert has_schema("kafka.strimzi.io/v1beta2", "KafkaTopic")
    assert not has_schema("apps/v1", "Deployment")
    assert not has_schema("keda.sh/v1alpha1", "scaledobject")
    assert not has_schema("kafka.strimzi.io/v1beta1", "KafkaTopic")


@pytest.mark.parametrize(
    "head",
    [
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob"},
        {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "Kafka"},
        {"apiVersion": "apps/v1", "kind": "Deployment"},
        {"kind": "ScaledObject"},
    ],
)
def test_unknown_kind_raises_key_error(head: dict[str, Any]) -> None:
    with pytest.raises(KeyError) as info:
        validate_custom({**head, "metadata": {"name": "x"}, "spec": {}})
    assert isinstance(info.value, UnknownCustomResourceError)
    assert repr(head.get("kind")) in str(info.value)
