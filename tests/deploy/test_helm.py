"""The Helm chart: lints, renders for the defaults and a production-like install, and every manifest is valid.

Rendering and linting run Helm v4's own engine in-process (helm-python-sdk, no helm binary);
built-in kinds are validated against Kubernetes' OpenAPI schemas (kubernetes-validate). The CRD
kinds (ServiceMonitor, ScaledObject) have no schema there: their required fields are checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptoflow_cli.access import ADMIN, generated_authorization, identities

from .support import CHART_DIR, CHART_NATS_AUTHORIZATION, SERVICES, allowed_env

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm v4 in-process) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

KUBERNETES_VERSION = "1.30.0"
RELEASE, NAMESPACE = "cf", "data"
PRODUCTION_VALUES = Path(__file__).parent / "values-production.yaml"
CRD_KINDS = {"ServiceMonitor", "ScaledObject"}
CONSUMER_KEYS = {"lakeWriter": "lake-writer", "transformer": "transformer", "warehouseLoader": "warehouse-loader"}


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return values


@pytest.fixture(scope="module", params=["default", "production"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    values = None if request.param == "default" else production_values()
    return request.param, render(values)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("values_name", ["default", "production"])
def test_helm_lint_is_clean(values_name: str) -> None:
    values = None if values_name == "default" else production_values()
    report = helm.lint(str(CHART_DIR), values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES_VERSION}")
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report
    # Severity 1 is informational (e.g. "icon is recommended"); warnings and errors fail.
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


def test_every_manifest_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}")
    assert {doc["kind"] for doc in docs} - CRD_KINDS <= {
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ConfigMap",  # the NATS server's authorization block (no password)
        "Job",  # the streams, created as the NATS admin
    }
    assert not of_kind(docs, "Secret"), "the chart creates no Secret: credentials come from existing ones"


def test_each_service_is_a_deployment_with_probes_resources_and_no_root(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    deployments = of_kind(docs, "Deployment")
    assert {component(d) for d in deployments} == set(SERVICES)
    for deployment in deployments:
        name = component(deployment)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert container["command"] == [f"cryptoflow-{name}"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"], name
        assert container["resources"]["limits"]["memory"], name
        pod_sc, container_sc = pod.get("securityContext", {}), container.get("securityContext", {})
        assert container_sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
        assert container_sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, name
        assert container_sc["allowPrivilegeEscalation"] is False, name
        env = env_of(deployment)
        prefix = SERVICES[name].prefix
        assert env[f"{prefix}_HTTP_HOST"]["value"] == "0.0.0.0", "probes and scrapes reach the pod IP"
        assert env[f"{prefix}_HTTP_PORT"]["value"] == str(port)


def test_env_names_are_real_settings(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for deployment in of_kind(docs, "Deployment"):
        info = SERVICES[component(deployment)]
        unknown = set(env_of(deployment)) - allowed_env(info)
        assert not unknown, f"{info.name}: {sorted(unknown)} are not settings of {info.settings}"


def test_the_extractor_is_one_replica_by_default_and_no_keda_scaled_object(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    (extractor,) = [d for d in of_kind(docs, "Deployment") if component(d) == "extractor"]
    assert extractor["spec"]["replicas"] == 1
    assert not [
        d for d in of_kind(docs, "ScaledObject") + of_kind(docs, "PodDisruptionBudget") if component(d) == "extractor"
    ]


def test_extractor_replicas_are_allowed_and_rolled_since_they_share_jobs_by_lease() -> None:
    """Issue 11: replicas share the jobs through leases (decision 0042); the chart no longer forbids them."""
    docs = render({"components": {"extractor": {"replicaCount": 3}}})
    (extractor,) = [d for d in of_kind(docs, "Deployment") if component(d) == "extractor"]
    assert extractor["spec"]["replicas"] == 3
    assert extractor["spec"]["strategy"]["type"] == "RollingUpdate"
    with helm.Chart.load(CHART_DIR) as chart, pytest.raises(helm.HelmError, match="replicaCount"):
        chart.validate_schema({"components": {"extractor": {"replicaCount": 0}}})


def test_the_schema_refuses_unknown_settings_prefixes() -> None:
    with helm.Chart.load(CHART_DIR) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema({"components": {"transformer": {"env": {"LAKE_WRITER_BATCH_SIZE": "5"}}}})


def test_services_select_their_deployments_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    pods = {component(d): d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")}
    services = of_kind(docs, "Service")
    assert {component(s) for s in services} == set(SERVICES)
    for service in services:
        selector = service["spec"]["selector"]
        assert selector.items() <= pods[component(service)].items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_default_install_has_no_optional_objects() -> None:
    docs = render(None)
    assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "ScaledObject")
    assert not of_kind(docs, "PodDisruptionBudget")
    for deployment in of_kind(docs, "Deployment"):
        assert deployment["spec"]["replicas"] == 1


def test_production_install_uses_existing_secrets() -> None:
    docs = render(production_values())
    deployments = {component(d): d for d in of_kind(docs, "Deployment")}
    for name, deployment in deployments.items():
        env = env_of(deployment)
        if SERVICES[name].lake:
            for key, secret_key in (
                ("AWS_ACCESS_KEY_ID", "access-key-id"),
                ("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
            ):
                assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "cryptoflow-s3", "key": secret_key}
        else:
            assert not {"AWS_ACCESS_KEY_ID", "DATABASE_URL", "PGPASSWORD"} & set(env), name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": "cryptoflow-tuning", "optional": True}} in container["envFrom"]
        assert container["image"] == "registry.example.com/data/cryptoflow:0.1.0"
    loader = env_of(deployments["warehouse-loader"])
    assert urlsplit(loader["DATABASE_URL"]["value"]).password is None, "the password comes from the Secret only"
    assert loader["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "cryptoflow-warehouse", "key": "password"}


def test_database_url_can_come_whole_from_a_secret() -> None:
    values = production_values()
    values["database"]["urlSecret"]["name"] = "warehouse-dsn"
    values["database"]["passwordSecret"]["name"] = ""
    docs = render(values)
    (loader,) = [d for d in of_kind(docs, "Deployment") if component(d) == "warehouse-loader"]
    env = env_of(loader)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "warehouse-dsn", "key": "DATABASE_URL"}
    assert "PGPASSWORD" not in env


def test_production_consumers_run_three_replicas_scaled_by_keda_on_their_durable() -> None:
    values = production_values()
    docs = render(values)
    deployments = {component(d): d for d in of_kind(docs, "Deployment")}
    scaled = {component(s): s for s in of_kind(docs, "ScaledObject")}
    for key, name in CONSUMER_KEYS.items():
        settings = values["components"][key]
        if settings["keda"]["enabled"]:
            assert "replicas" not in deployments[name]["spec"], "KEDA owns the replica count"
            spec = scaled[name]["spec"]
            assert spec["minReplicaCount"] == 3
        else:
            assert name not in scaled
            assert deployments[name]["spec"]["replicas"] == 3
    assert set(scaled) == {"lake-writer", "transformer"}
    for name, scaled_object in scaled.items():
        spec = scaled_object["spec"]
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        assert spec["scaleTargetRef"]["name"] == deployments[name]["metadata"]["name"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "nats-jetstream"
        metadata = trigger["metadata"]
        assert all(isinstance(value, str) for value in metadata.values()), "KEDA trigger metadata are strings"
        assert {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} <= set(metadata)
        # The consumer KEDA watches is the durable the service consumes with, on the stream it reads.
        assert metadata["stream"] == SERVICES[name].stream
        assert metadata["consumer"] == env_of(deployments[name])[f"{SERVICES[name].prefix}_DURABLE"]["value"]
        assert metadata["natsServerMonitoringEndpoint"] == "nats.messaging.svc.cluster.local:8222"


def test_production_pdbs_and_service_monitor_select_the_services() -> None:
    docs = render(production_values())
    pods = {component(d): d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")}
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert {component(p) for p in pdbs} == set(CONSUMER_KEYS.values())
    for pdb in pdbs:
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pods[component(pdb)].items()
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"] and spec["endpoints"], "required by the ServiceMonitor CRD"
    services = of_kind(docs, "Service")
    selected = [s for s in services if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert len(selected) == len(SERVICES)
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert all(port["name"] == endpoint["port"] for s in selected for port in s["spec"]["ports"])
    # The alert rules match on `component`, as the compose Prometheus config sets it.
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "component"
    assert relabel["sourceLabels"] == ["__meta_kubernetes_service_label_app_kubernetes_io_component"]


# --- NATS access (docs/decisions/0036) ------------------------------------------------------------


def _job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = of_kind(docs, "Job")
    return job


def test_each_service_authenticates_as_its_own_nats_user(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for deployment in of_kind(docs, "Deployment"):
        name = component(deployment)
        env = env_of(deployment)
        assert env["NATS_USER"]["value"] == name
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "cryptoflow-nats", "key": name}
        assert urlsplit(env["NATS_URL"]["value"]).password is None, "the password comes from the Secret only"


def test_the_nats_authorization_config_map_is_the_generated_file(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    (config_map,) = of_kind(docs, "ConfigMap")
    text = config_map["data"]["authorization.conf"]
    assert CHART_NATS_AUTHORIZATION.read_text() == generated_authorization(), "python -m cryptoflow_cli.access"
    assert text.strip() == generated_authorization().strip()
    users = {identity.user for identity in identities()}
    assert users == {ADMIN, "consumer", *SERVICES}
    for identity in identities():
        assert f"password: ${identity.password_variable}" in text


def test_streams_are_created_by_the_admin_job_before_install_and_upgrade(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    job = _job(docs)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "cryptoflow_runtime.streams"]
    env = {item["name"]: item for item in container["env"]}
    assert env["NATS_USER"]["value"] == ADMIN
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "cryptoflow-nats", "key": ADMIN}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_nats_tls_ca_and_auth_off() -> None:
    values = production_values()
    values["nats"]["tls"] = {"caSecret": "nats-ca", "caKey": "ca.crt"}
    values["streams"] = {"job": {"enabled": True, "env": {"STREAM_RAW_MAX_AGE_S": 86400}}}
    docs = render(values)
    for workload in [*of_kind(docs, "Deployment"), _job(docs)]:
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {item["name"]: item for item in container["env"]}
        assert env["NATS_TLS_CA"]["value"] == "/etc/cryptoflow/nats-ca/ca.crt"
        assert {"name": "nats-ca", "mountPath": "/etc/cryptoflow/nats-ca", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert {
            "name": "nats-ca",
            "secret": {"secretName": "nats-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        } in pod["volumes"]
    job_env = {item["name"]: item for item in _job(docs)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["STREAM_RAW_MAX_AGE_S"]["value"] == "86400"

    values["nats"]["auth"]["enabled"] = False
    docs = render(values)
    assert not of_kind(docs, "ConfigMap")
    for deployment in of_kind(docs, "Deployment"):
        assert not {"NATS_USER", "NATS_PASSWORD"} & set(env_of(deployment))


def test_auth_needs_a_secret_and_the_registry_durables() -> None:
    with helm.Chart.load(CHART_DIR) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema({"nats": {"auth": {"enabled": True, "existingSecret": ""}}})
    with helm.Chart.load(CHART_DIR) as chart:
        values = chart.merge_values({"components": {"transformer": {"durable": "transformer-2"}}})
        with pytest.raises(helm.HelmError, match="durable must be transformer"):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
