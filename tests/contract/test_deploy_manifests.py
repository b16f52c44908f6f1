"""deploy/: every overlay renders with ``kubectl kustomize``; the rendered objects pass
Kubernetes 1.32 schemas (``kubernetes-validate --strict``) and, for the custom
resources, the shipped KEDA / Strimzi / prometheus-operator CRD schemas; and the
objects agree with each other and with the code (topics, group, ports, settings)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Final

import kubernetes_validate
import pytest
import yaml
from crd_schemas import has_schema, validate_custom

from stream import names
from stream.settings import StreamSettings

ROOT: Final = Path(__file__).resolve().parents[2]
OVERLAYS: Final = ("dev", "prod")
K8S_VERSION: Final = "1.32.0"
# custom kinds with no CRD schema offline: checked field by field below instead
UNSCHEMED: Final = frozenset({"KafkaUser"})
Doc = dict[str, Any]


@cache
def rendered(overlay: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to render deploy/overlays"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc, Doc]]:
    for dep in of_kind(docs, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield dep["metadata"]["name"], spec, c


def worker_env(docs: tuple[Doc, ...]) -> dict[str, str]:
    (cm,) = [
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("synthguard-worker")
    ]
    return dict(cm["data"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_pass_kubernetes_schemas(overlay: str) -> None:
    errors = []
    for doc in rendered(overlay):
        if has_schema(doc["apiVersion"], doc["kind"]) or doc["kind"] in UNSCHEMED:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_pass_their_crd_schemas(overlay: str) -> None:
    customs = [d for d in rendered(overlay) if has_schema(d["apiVersion"], d["kind"])]
    assert {d["kind"] for d in customs} >= {
        "ScaledObject", "KafkaTopic", "PodMonitor", "ServiceMonitor", "PrometheusRule",
    }  # fmt: skip
    errors = [e for d in customs for e in validate_custom(d)]
    assert not errors, "\n".join(errors)


def test_validation_catches_a_misspelt_field() -> None:
    pdb = one(rendered("dev"), "PodDisruptionBudget", "synthguard-worker")
    bad = {**pdb, "spec": {**pdb["spec"], "maxUnavailabe": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    so = one(rendered("dev"), "ScaledObject", "synthguard-worker")
    assert validate_custom({**so, "spec": {**so["spec"], "maxReplicas": 3}})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_namespaced_and_labelled(overlay: str) -> None:
    namespace = {"dev": "synthguard-dev", "prod": "synthguard"}[overlay]
    for doc in rendered(overlay):
        meta = doc["metadata"]
        assert meta.get("namespace") == namespace, meta["name"]
        assert meta["labels"].get("app.kubernetes.io/part-of") == "synthguard"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_hardened_with_resources_and_probes(overlay: str) -> None:
    for deployment, pod, c in containers(rendered(overlay)):
        where = f"{deployment}/{c['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False, where
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), where
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{where}: no {probe}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_drain_and_static_membership(overlay: str) -> None:
    docs = rendered(overlay)
    dep = one(docs, "Deployment", "synthguard-worker")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = worker_env(docs)
    assert ports["metrics"] == int(env["SYNTHGUARD_METRICS__PORT"])
    assert env["SYNTHGUARD_METRICS__HOST"] == "0.0.0.0"  # noqa: S104 - pod IP
    instance = {e["name"]: e for e in c["env"]}["SYNTHGUARD_KAFKA__GROUP_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    drain = float(env["SYNTHGUARD_WORKER__DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 15
    # a pod restart inside the session timeout keeps its partitions
    assert int(env["SYNTHGUARD_KAFKA__SESSION_TIMEOUT_MS"]) >= 30_000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_configmap_is_valid_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("SYNTHGUARD_")]:
        monkeypatch.delenv(key)
    for key, value in worker_env(rendered(overlay)).items():
        monkeypatch.setenv(key, value)
    if overlay == "prod":  # from the KafkaUser secret at run time
        monkeypatch.setenv("SYNTHGUARD_KAFKA__SASL_PASSWORD", "from-secret")
    settings = StreamSettings()
    k = settings.kafka
    assert (k.uploads_topic, k.verdicts_topic, k.dlq_topic, k.group_id) == (
        names.UPLOADS_TOPIC, names.VERDICTS_TOPIC, names.DLQ_TOPIC, names.GROUP_ID,
    )  # fmt: skip
    assert settings.fetch.allow_file is False
    assert k.enable_idempotence is True
    assert k.security_protocol == {"dev": "PLAINTEXT", "prod": "SASL_SSL"}[overlay]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_learner_is_one_writer_with_valid_settings_and_a_shared_bank(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered(overlay)
    dep = one(docs, "Deployment", "synthguard-learner")
    assert (dep["spec"]["replicas"], dep["spec"]["strategy"]["type"]) == (1, "Recreate")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["learner"]
    (cm,) = [
        d for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("synthguard-learner")
    ]  # fmt: skip
    for key in [k for k in __import__("os").environ if k.startswith("SYNTHGUARD_")]:
        monkeypatch.delenv(key)
    for key, value in cm["data"].items():
        monkeypatch.setenv(key, value)
    if overlay == "prod":
        monkeypatch.setenv("SYNTHGUARD_KAFKA__SASL_PASSWORD", "from-secret")
    ls = StreamSettings().learner
    assert (ls.feedback_topic, ls.dlq_topic, ls.group_id) == (
        names.FEEDBACK_TOPIC, names.FEEDBACK_DLQ_TOPIC, names.LEARNER_GROUP_ID,
    )  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert ls.bank_dir.is_relative_to(mounts["feedback-bank"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == int(cm["data"]["SYNTHGUARD_METRICS__PORT"])
    triton = one(docs, "Deployment", "synthguard-triton")["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for spec in (dep["spec"]["template"]["spec"], triton)
        for v in spec["volumes"] if "persistentVolumeClaim" in v
    }  # fmt: skip
    assert claims == {"synthguard-feedback-bank"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topics_autoscaling_and_config_agree(overlay: str) -> None:
    docs = rendered(overlay)
    topics = {t["spec"]["topicName"]: t for t in of_kind(docs, "KafkaTopic")}
    assert set(topics) == {
        names.UPLOADS_TOPIC, names.VERDICTS_TOPIC, names.DLQ_TOPIC,
        names.FEEDBACK_TOPIC, names.FEEDBACK_DLQ_TOPIC,
    }  # fmt: skip
    assert topics[names.VERDICTS_TOPIC]["spec"]["config"]["cleanup.policy"] == "compact"
    so = one(docs, "ScaledObject", "synthguard-worker")
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    env = worker_env(docs)
    assert trigger["type"] == "kafka"
    assert meta["topic"] == env["SYNTHGUARD_KAFKA__UPLOADS_TOPIC"]
    assert meta["consumerGroup"] == env["SYNTHGUARD_KAFKA__GROUP_ID"]
    assert meta["bootstrapServers"] == env["SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["allowIdleConsumers"] == "false"
    partitions = topics[meta["topic"]]["spec"]["partitions"]
    assert so["spec"]["maxReplicaCount"] <= partitions
    assert so["spec"]["scaleTargetRef"]["name"] == "synthguard-worker"
    if env["SYNTHGUARD_KAFKA__SECURITY_PROTOCOL"] != "PLAINTEXT":
        auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} >= {
            "sasl", "username", "password", "tls", "ca",
        }  # fmt: skip


# the KafkaUser v1 fields these manifests use (Strimzi's CRD, kafka.strimzi.io/v1)
_USER_SPEC: Final = {"authentication", "authorization", "quotas"}
_ACL: Final = {"type", "resource", "host", "operations"}
_RESOURCE: Final = {"type", "name", "patternType"}
_OPERATIONS: Final = {
    "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
    "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All",
}  # fmt: skip


def _grants(user: Doc) -> set[tuple[str, str, str]]:
    """(resource type, name, operation) allowed to one KafkaUser, fields checked."""
    spec = user["spec"]
    assert set(spec) <= _USER_SPEC, user["metadata"]["name"]
    assert spec["authentication"] == {"type": "scram-sha-512"}
    assert set(spec["authorization"]) == {"type", "acls"}
    assert spec["authorization"]["type"] == "simple"
    out = set()
    for acl in spec["authorization"]["acls"]:
        assert set(acl) <= _ACL, acl
        assert set(acl["resource"]) <= _RESOURCE, acl
        assert acl.get("type", "allow") == "allow"
        assert acl["resource"].get("patternType", "literal") == "literal"
        assert acl["resource"]["type"] in {"topic", "group"}
        assert set(acl["operations"]) <= _OPERATIONS, acl
        res = acl["resource"]
        out |= {(res["type"], res["name"], op) for op in acl["operations"]}
    return out


def test_kafka_users_are_least_privilege_and_match_the_code() -> None:
    docs = rendered("prod")
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    assert set(users) == {
        "synthguard-worker", "synthguard-learner", "synthguard-feedback-producer",
    }  # fmt: skip
    for u in users.values():
        assert u["metadata"]["labels"]["strimzi.io/cluster"] == "synthguard"
    grants = {name: _grants(u) for name, u in users.items()}
    topic, group = "topic", "group"
    assert grants["synthguard-worker"] == {
        (topic, names.UPLOADS_TOPIC, "Read"), (topic, names.UPLOADS_TOPIC, "Describe"),
        (group, names.GROUP_ID, "Read"), (group, names.GROUP_ID, "Describe"),
        (topic, names.VERDICTS_TOPIC, "Write"), (topic, names.VERDICTS_TOPIC, "Describe"),
        (topic, names.DLQ_TOPIC, "Write"), (topic, names.DLQ_TOPIC, "Describe"),
    }  # fmt: skip
    assert grants["synthguard-learner"] == {
        (topic, names.FEEDBACK_TOPIC, "Read"), (topic, names.FEEDBACK_TOPIC, "Describe"),
        (group, names.LEARNER_GROUP_ID, "Read"),
        (group, names.LEARNER_GROUP_ID, "Describe"),
        (topic, names.FEEDBACK_DLQ_TOPIC, "Write"),
        (topic, names.FEEDBACK_DLQ_TOPIC, "Describe"),
    }  # fmt: skip
    # the trust boundary of docs/feedback.md: one identity writes feedback, only that
    writers = {
        n for n, g in grants.items() if (topic, names.FEEDBACK_TOPIC, "Write") in g
    }
    assert writers == {"synthguard-feedback-producer"}
    assert grants["synthguard-feedback-producer"] == {
        (topic, names.FEEDBACK_TOPIC, "Write"), (topic, names.FEEDBACK_TOPIC, "Describe"),
    }  # fmt: skip
    assert (
        users["synthguard-feedback-producer"]["spec"]["quotas"]["producerByteRate"] > 0
    )
    # the processes log in as these users, with the Secrets the User Operator writes
    logins = {
        d["data"]["SYNTHGUARD_KAFKA__SASL_USERNAME"]
        for d in of_kind(docs, "ConfigMap")
        if "SYNTHGUARD_KAFKA__SASL_USERNAME" in d.get("data", {})
    }
    assert logins == {"synthguard-worker", "synthguard-learner"}
    secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _dep, _spec, c in containers(docs)
        for e in c.get("env", [])
        if e["name"] == "SYNTHGUARD_KAFKA__SASL_PASSWORD"
    }
    assert secrets == logins
    assert not of_kind(rendered("dev"), "KafkaUser")  # dev: a plaintext dev broker


def test_kafka_user_check_catches_a_misspelt_field() -> None:
    user = one(rendered("prod"), "KafkaUser", "synthguard-learner")
    acl = dict(user["spec"]["authorization"]["acls"][0])
    acl["operation"] = acl.pop("operations")  # the pre-v1 singular spelling
    bad = {"type": "simple", "acls": [acl]}
    with pytest.raises(AssertionError):
        _grants({**user, "spec": {**user["spec"], "authorization": bad}})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitors_point_at_declared_ports(overlay: str) -> None:
    docs = rendered(overlay)
    worker = one(docs, "Deployment", "synthguard-worker")["spec"]["template"]
    pm = one(docs, "PodMonitor", "synthguard-worker")
    assert (
        pm["spec"]["selector"]["matchLabels"].items()
        <= worker["metadata"]["labels"].items()
    )
    worker_ports = {p["name"] for p in worker["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= worker_ports
    svc = one(docs, "Service", "synthguard-triton")
    sm = one(docs, "ServiceMonitor", "synthguard-triton")
    assert (
        sm["spec"]["selector"]["matchLabels"].items()
        <= svc["metadata"]["labels"].items()
    )
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {
        p["name"] for p in svc["spec"]["ports"]
    }
    triton = one(docs, "Deployment", "synthguard-triton")["spec"]["template"]
    assert svc["spec"]["selector"].items() <= triton["metadata"]["labels"].items()
    (c,) = triton["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    declared = {p["name"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= declared


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_name_declared_ports(overlay: str) -> None:
    docs = rendered(overlay)
    ports: dict[str, set[str | int]] = {}
    for name, _pod, c in containers(docs):
        ports.setdefault(name, set()).update(p["name"] for p in c.get("ports", []))
    for np in of_kind(docs, "NetworkPolicy"):
        name = np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        for rule in np["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in ports[name], (np["metadata"]["name"], port)


def test_triton_gpu_only_in_prod() -> None:
    def gpus(overlay: str) -> str | None:
        triton = one(rendered(overlay), "Deployment", "synthguard-triton")
        (c,) = triton["spec"]["template"]["spec"]["containers"]
        limit = c["resources"]["limits"].get("nvidia.com/gpu")
        return None if limit is None else str(limit)

    assert gpus("dev") is None
    assert gpus("prod") == "1"
    prod = one(rendered("prod"), "Deployment", "synthguard-triton")
    (c,) = prod["spec"]["template"]["spec"]["containers"]
    assert "--model-config-name=gpu" in c["args"]
    assert prod["spec"]["replicas"] >= 2
    pdb = one(rendered("prod"), "PodDisruptionBudget", "synthguard-triton")
    assert pdb["spec"]["minAvailable"] == 1
    gpu_config = (
        ROOT / "model_repository" / "clip_image_encoder" / "configs" / "gpu.pbtxt"
    )
    assert gpu_config.is_file()


def test_dashboards_and_rules_ship_with_every_overlay() -> None:
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        cm = one(docs, "ConfigMap", "synthguard-dashboards")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert set(cm["data"]) == {
            p.name for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")
        }
        one(docs, "PrometheusRule", "synthguard")
