"""k8s/components/tls as the example overlay renders it: the certificate Secret is mounted where
the settings point, the probes use the plaintext health port, and the example Certificate
fits what the nodes need (both usages, names that cover every pod's peer address).

Strict schema validation of the rendered overlay is in test_k8s.py; what cannot be checked
here (cert-manager issuing, the kubelet probing, a Secret update reaching the pods) needs a
real cluster."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import load_yaml, load_yaml_all, run, tool, unknown_settings
from tests.support import REPO

K8S = REPO / "k8s"
pytestmark = pytest.mark.slow  # kustomize takes a second


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = load_yaml_all(
        run([tool("kubectl"), "kustomize", str(K8S / "overlays/example")])
    )
    return documents


def one(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one `kind` named `name`, or `name-<hash>` for generated ConfigMaps."""
    found = [
        d
        for d in documents
        if d["kind"] == kind
        and (
            d["metadata"]["name"] == name
            or (kind == "ConfigMap" and d["metadata"]["name"].startswith(name + "-"))
        )
    ]
    assert len(found) == 1
    return found[0]


def test_certificates_are_mounted_where_the_settings_point(example: list[dict[str, Any]]) -> None:
    settings = one(example, "ConfigMap", "shoal-config")["data"]
    assert not unknown_settings(set(settings))
    pod = one(example, "StatefulSet", "shoal")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount["readOnly"] and "subPath" not in mount  # subPath mounts never see renewals
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "shoal-tls"
    directory = Path(mount["mountPath"])
    assert settings["SHOAL_TLS_CERT_FILE"] == str(directory / "tls.crt")
    assert settings["SHOAL_TLS_KEY_FILE"] == str(directory / "tls.key")
    assert settings["SHOAL_TLS_CA_FILE"] == str(directory / "ca.crt")
    assert settings["SHOAL_TLS_CLIENT_AUTH"] == "require"


def test_probes_use_the_plaintext_health_port(example: list[dict[str, Any]]) -> None:
    settings = one(example, "ConfigMap", "shoal-config")["data"]
    container = one(example, "StatefulSet", "shoal")["spec"]["template"]["spec"]["containers"][0]
    health_port = int(settings["SHOAL_HEALTH_PORT"])
    assert health_port != int(settings["SHOAL_GRPC_PORT"])
    assert {"name": "health", "containerPort": health_port} in container["ports"]
    for probe, service in (
        ("startupProbe", "liveness"),
        ("livenessProbe", "liveness"),
        ("readinessProbe", "readiness"),
    ):
        assert container[probe]["grpc"] == {"port": health_port, "service": service}
    client = one(example, "Service", "shoal")["spec"]["ports"]
    assert all(p.get("appProtocol") != "kubernetes.io/h2c" for p in client)  # TLS, not h2c
    policy = one(example, "NetworkPolicy", "shoal")["spec"]["ingress"]
    opened = {p["port"] for rule in policy for p in rule["ports"]}
    assert "health" not in opened and health_port not in opened


def test_example_certificate_fits_the_nodes(example: list[dict[str, Any]]) -> None:
    certificate = load_yaml((K8S / "components/tls/certificate.example.yaml").read_text())
    spec = certificate["spec"]
    assert spec["secretName"] == "shoal-tls"
    assert {"server auth", "client auth"} <= set(spec["usages"])  # nodes dial each other with it
    namespace = "shoal"
    headless = one(example, "Service", "shoal-headless")["metadata"]["name"]
    replicas = one(example, "StatefulSet", "shoal")["spec"]["replicas"]
    for ordinal in range(replicas):  # start.sh advertises pod.headless.namespace.svc.cluster.local
        peer = f"shoal-{ordinal}.{headless}.{namespace}.svc.cluster.local"
        assert any(fnmatch.fnmatch(peer, name) for name in spec["dnsNames"]), peer
    assert f"shoal.{namespace}.svc.cluster.local" in spec["dnsNames"]
