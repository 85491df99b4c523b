"""The chart's read API (opt-in, `api.enabled`): a Deployment with probes, no root, real settings and
the read-only identities, its Service, and the optional Ingress and HPA — all valid Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest

from .support import API, allowed_env
from .test_helm import KUBERNETES_VERSION, component, env_of, of_kind, render

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

API_VALUES: dict[str, Any] = {
    "nats": {"auth": {"enabled": True, "existingSecret": "cryptoflow-nats"}},
    "api": {
        "enabled": True,
        "database": {"urlSecret": {"name": "cryptoflow-api-db", "key": "DATABASE_URL"}},
        "corsOrigins": "https://dashboards.example",
        "env": {"API_LIVE_QUEUE_MESSAGES": 500},
        "ingress": {"enabled": True, "className": "nginx", "host": "api.example", "tls": [{"hosts": ["api.example"]}]},
        "hpa": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
    },
}


def api_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        doc["kind"]: doc
        for doc in docs
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "api"
    }


def test_the_default_install_has_no_api() -> None:
    assert api_objects(render(None)) == {}


def test_the_api_renders_valid_objects_with_read_only_identities() -> None:
    docs = render(API_VALUES)
    objects = api_objects(docs)
    assert set(objects) == {"Deployment", "Service", "HorizontalPodAutoscaler", "Ingress"}
    for doc in objects.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    deployment = objects["Deployment"]
    assert component(deployment) == "api" and "replicas" not in deployment["spec"], "the HPA sets replicas"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [API.command]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and container["securityContext"]["allowPrivilegeEscalation"] is False
    )
    env = env_of(deployment)
    assert not set(env) - allowed_env(API), sorted(set(env) - allowed_env(API))
    assert env["API_HTTP_HOST"]["value"] == "0.0.0.0"
    assert env["NATS_USER"]["value"] == "consumer"
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "cryptoflow-nats", "key": "consumer"}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "cryptoflow-api-db", "key": "DATABASE_URL"}
    assert env["API_CORS_ORIGINS"]["value"] == "https://dashboards.example"
    assert env["API_LIVE_QUEUE_MESSAGES"]["value"] == "500"
    name = deployment["metadata"]["name"]
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == name
    service = objects["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    backend = objects["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    # The stages are unchanged beside it.
    assert len(of_kind(docs, "Deployment")) == 5


def test_the_service_monitor_scrapes_the_api() -> None:
    docs = render({**API_VALUES, "serviceMonitor": {"enabled": True}})
    (monitor,) = of_kind(docs, "ServiceMonitor")
    service = api_objects(docs)["Service"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]


def test_the_schema_refuses_settings_of_other_services() -> None:
    with pytest.raises(Exception, match="API_"):
        render({"api": {"enabled": True, "env": {"EXTRACTOR_SYMBOLS": "BTC/USDT"}}})
