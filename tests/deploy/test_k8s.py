"""k8s/: the base and the example overlay render with kustomize, pass the strict Kubernetes 1.30
schemas, and hold the properties a replicated broker needs (ECOSYSTEM §1.3). The Prometheus
Operator objects have no offline schema: their rules go through promtool instead.

Not checked here, because no API server is available: admission, server-side defaults, and how
the StatefulSet actually behaves (docs/operations.md says so too)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from broker.config import load_config
from tests.deploy.tools import load_yaml, load_yaml_all, run, tool, unknown_settings
from tests.support import REPO

K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.30.0"
CRD_GROUPS = ("monitoring.coreos.com/",)
pytestmark = pytest.mark.slow  # kustomize and the validator take a second or two each


def render(directory: Path) -> list[dict[str, Any]]:
    output = run([tool("kubectl"), "kustomize", str(directory)])
    return load_yaml_all(output)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return render(K8S / "overlays/example")


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


@pytest.mark.parametrize("directory", ["base", "overlays/example"])
def test_strict_schema_validation(directory: str, tmp_path: Path) -> None:
    documents = render(K8S / directory)
    builtin = [d for d in documents if not d["apiVersion"].startswith(CRD_GROUPS)]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text("---\n".join(json.dumps(d) + "\n" for d in builtin))
    output = run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(rendered)])
    assert output.count("passed for resource") == len(builtin), output
    assert "ERROR" not in output and "WARN" not in output, output


def test_the_validator_catches_errors(tmp_path: Path) -> None:
    """Guards the check above: a misspelt field and a named gRPC probe port must fail."""
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x:1",
                    "resourcez": {},
                    "readinessProbe": {"grpc": {"port": "grpc"}},
                }
            ]
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(bad))
    validator = tool("kubernetes-validate")
    result = subprocess.run(
        [validator, "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0


def test_statefulset(base: list[dict[str, Any]]) -> None:
    sts = one(base, "StatefulSet", "shoal")
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "shoal-headless"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 90
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"

    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] == 10001
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # the only writable paths
    assert container["startupProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": "readiness"}
    assert "preStop" in container["lifecycle"]
    assert container["command"][:2] == ["tini", "--"]


def test_services(base: list[dict[str, Any]]) -> None:
    headless = one(base, "Service", "shoal-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["ports"]} == {50051, 50052, 50055, 9464}
    client = one(base, "Service", "shoal")["spec"]
    assert {p["port"] for p in client["ports"]} == {4567, 50051, 9464}
    # Raft and framed replication stay internal
    assert not {50052, 50055} & {p["port"] for p in client["ports"]}
    config = next(
        d["data"]
        for d in base
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shoal-config")
    )
    assert config["SHOAL_REPLICATION_PORT"] == "50055"
    container = one(base, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "replication", "containerPort": 50055} in container["ports"]
    pod_labels = one(base, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    for service in (headless, client):
        assert service["selector"].items() <= pod_labels.items()


def test_disruption_budget(base: list[dict[str, Any]]) -> None:
    pdb = one(base, "PodDisruptionBudget", "shoal")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["selector"]["matchLabels"]


def test_network_policy_keeps_raft_and_replication_to_the_statefulset(
    base: list[dict[str, Any]],
) -> None:
    policy = one(base, "NetworkPolicy", "shoal")["spec"]
    pod_labels = one(base, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    for rule in policy["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        if "raft" in ports or "replication" in ports:
            assert ports == {"raft", "replication"}
            (peer,) = rule["from"]
            assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
        else:
            assert "from" not in rule  # client ports: open to any source


def test_secrets_are_referenced_not_shipped(
    base: list[dict[str, Any]], example: list[dict[str, Any]]
) -> None:
    assert not [d for d in base if d["kind"] == "Secret"]
    env = {
        e["name"]: e
        for e in one(base, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    password = env["SHOAL_RAFT_PASSWORD"]["valueFrom"]["secretKeyRef"]
    keys = env["SHOAL_AWS_CREDENTIALS"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == keys["name"] == "shoal-secrets"
    secret = one(example, "Secret", "shoal-secrets")
    assert secret["metadata"]["annotations"]["shoal/example"] == "true"
    assert {password["key"], keys["key"]} <= set(secret["stringData"])
    text = (K8S / "overlays/example/secret.example.yaml").read_text()
    assert "EXAMPLE ONLY" in text


def test_settings_are_known_and_cluster_size_matches(base: list[dict[str, Any]]) -> None:
    sts = one(base, "StatefulSet")
    config = next(
        d
        for d in base
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shoal-config")
    )
    container = sts["spec"]["template"]["spec"]["containers"][0]
    names = set(config["data"]) | {e["name"] for e in container["env"]}
    assert not unknown_settings(names)
    assert int(config["data"]["SHOAL_VOTERS"]) <= sts["spec"]["replicas"]
    assert config["data"]["SHOAL_LISTEN_HOST"] == "0.0.0.0"  # port-forward and exec reach it
    assert config["data"]["SHOAL_GRPC_PORT"] == "50051"  # the probes' port


def test_monitoring_objects(example: list[dict[str, Any]], tmp_path: Path) -> None:
    monitor = one(example, "ServiceMonitor", "shoal")["spec"]
    headless = one(example, "Service", "shoal-headless")["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= headless.items()
    assert monitor["jobLabel"] == "app.kubernetes.io/name"
    assert headless["app.kubernetes.io/name"] == "shoal"  # so job="shoal", as the rules expect
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]

    rule = one(example, "PrometheusRule", "shoal")
    rules_path = tmp_path / "prometheusrule-groups.yml"
    rules_path.write_text(json.dumps({"groups": rule["spec"]["groups"]}))
    run([tool("promtool"), "check", "rules", str(rules_path)])
    assert rule["spec"] == load_yaml((REPO / "deploy/prometheus/rules.yml").read_text())

    dashboard = one(example, "ConfigMap", "shoal-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["shoal-dashboard.json"])
    assert shipped == json.loads((REPO / "deploy/grafana/shoal-dashboard.json").read_text())


def test_example_overlay(example: list[dict[str, Any]]) -> None:
    assert {d["metadata"].get("namespace") for d in example if d["kind"] != "Namespace"} == {
        "shoal"
    }
    container = one(example, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/shoal:0.1.0"


def fake_bin(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("pod", ["shoal-0", "shoal-2", "shoal-4"])
def test_start_script_derives_identity_and_peers(pod: str, tmp_path: Path) -> None:
    """start.sh with `hostname` and `shoal` stubbed: it exports the pod's FQDN as host, its
    name as node id, and the voters' pattern (the first SHOAL_VOTERS ordinals) whatever the
    pod's ordinal: shoal-4 of a scaled-up set joins the same quorum as a non-voting member."""
    domain = "shoal-headless.prod.svc.cluster.local"
    fake_bin(
        tmp_path,
        "hostname",
        f'if [ "${{1:-}}" = "-f" ]; then echo {pod}.{domain}; else echo {pod}; fi\n',
    )
    fake_bin(
        tmp_path,
        "shoal",
        'echo "args=$*"; echo "id=$SHOAL_NODE_ID"; echo "host=$SHOAL_HOST"; '
        'echo "voters=$SHOAL_PEERS_FROM_DNS"; echo "unset=${SHOAL_VOTERS-yes}"\n',
    )
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "SHOAL_VOTERS": "3",
        "SHOAL_RAFT_PORT": "50052",
    }
    result = subprocess.run(
        ["sh", str(K8S / "base/start.sh"), "--extra"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "args=serve --extra",
        f"id={pod}",
        f"host={pod}.{domain}",
        f"voters=shoal-{{0..2}}.{domain}:50052",
        "unset=yes",
    ]
    from broker.config import Config

    layout = Config(node_id=pod, peers_from_dns=f"shoal-{{0..2}}.{domain}:50052").quorum_layout()
    assert layout.read_only == (pod == "shoal-4")
    assert layout.self_address == f"{pod}.{domain}:50052"


def test_the_master_key_file_component(tmp_path: Path) -> None:
    """k8s/components/master-key-file: an overlay with it passes the strict schemas, mounts the
    Secret as a directory readable by the pod's fsGroup only, and sets settings the node reads
    as a key file at the mounted path (the default, the cluster key, needs none of this)."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)  # kustomize takes only relative paths to other directories
    overlay = copy / "overlays/master-key-file"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources: [../../base]\n"
        "components: [../../components/master-key-file]\n"
    )
    documents = render(overlay)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text("---\n".join(json.dumps(d) + "\n" for d in documents))
    output = run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(rendered)])
    assert output.count("passed for resource") == len(documents), output
    pod = one(documents, "StatefulSet")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "master-keys"]
    assert volume["secret"] == {"secretName": "shoal-master-keys", "defaultMode": 0o440}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "master-keys"]
    assert "subPath" not in mount and mount["readOnly"] is True
    config = next(
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shoal-config")
    )["data"]
    assert not unknown_settings(set(config))
    key_file = config["SHOAL_ENCRYPTION_KEY_FILE"]
    assert key_file.startswith(mount["mountPath"] + "/")
    loaded = load_config(
        flags={"data_dir": str(tmp_path / "data")},
        environ={
            "SHOAL_ENCRYPTION_MASTER_KEY": config["SHOAL_ENCRYPTION_MASTER_KEY"],
            "SHOAL_ENCRYPTION_KEY_FILE": key_file,
        },
    )
    assert loaded.encryption_master_key == "file"
    assert str(loaded.encryption_key_file) == key_file
