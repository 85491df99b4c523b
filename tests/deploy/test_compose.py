"""docker-compose.yml: valid per the Compose Specification, wired together, and set up with real settings.

No Docker engine is needed: the file is checked against the compose-spec JSON Schema (vendored in
schemas/, see schemas/README.md) and against the services' own settings classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from cryptoflow_cli.access import ADMIN, generated_authorization, identities, password_variable
from cryptoflow_exchange_sim.main import build_parser
from cryptoflow_runtime import ConfigError, load_settings

from .support import (
    COMPOSE_FILE,
    GRAFANA_DIR,
    NATS_AUTHORIZATION,
    POSTGRES_INITDB,
    PROMETHEUS_DIR,
    REPO,
    SERVICE_BY_COMMAND,
    allowed_env,
)

SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
HTTP_PORT = 8000


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $$ for a literal $."""
    env = {} if env is None else env

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, sep, default = match.group(1), match.group(2), match.group(3) or ""
        if sep == ":-":
            return env.get(name) or default
        if sep == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", replace, value)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {name: interpolate(str(value)) for name, value in raw.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return [interpolate(str(part)) for part in (shlex.split(command) if isinstance(command, str) else command)]


def pipeline_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run one of the four pipeline services, by that service's name."""
    found = {}
    for service in compose["services"].values():
        command = command_of(service)
        if command and command[0] in SERVICE_BY_COMMAND:
            found[SERVICE_BY_COMMAND[command[0]].name] = service
    return found


def test_vendored_schema_is_the_documented_one() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_is_valid_per_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_validation_catches_a_broken_file(compose: dict[str, Any]) -> None:
    # The check above is only worth something if the schema rejects what compose rejects.
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["nats"]["healthcheck"]["retries"] = "many"
    broken["services"]["extractor"]["depends_on"]["nats-init"]["condition"] = "service_ready"
    assert len(list(jsonschema.Draft202012Validator(schema).iter_errors(broken))) >= 2


def test_depends_on_targets_exist_and_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}, (name, target)
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: it has no check"


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    return {
        target
        for service in compose["services"].values()
        for target, condition in (service.get("depends_on") or {}).items()
        if condition["condition"] == "service_completed_successfully"
    }


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    one_shots = one_shot_services(compose)
    assert one_shots == {"minio-init", "nats-init"}
    for name, service in compose["services"].items():
        if name in one_shots:
            # A job that exits: health does not apply, and it must not be restarted.
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_the_four_services_and_the_simulator_run_from_the_one_image(compose: dict[str, Any]) -> None:
    services = pipeline_services(compose)
    assert set(services) == {"extractor", "lake-writer", "transformer", "warehouse-loader"}
    images = {service["image"] for service in services.values()} | {compose["services"]["exchange-sim"]["image"]}
    assert len(images) == 1
    for service in [*services.values(), compose["services"]["exchange-sim"]]:
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}


@pytest.mark.parametrize("service_name", ["extractor", "lake-writer", "transformer", "warehouse-loader"])
def test_service_env_names_are_real_settings(compose: dict[str, Any], service_name: str) -> None:
    info = SERVICE_BY_COMMAND[f"cryptoflow-{service_name}"]
    env = service_env(pipeline_services(compose)[service_name])
    unknown = set(env) - allowed_env(info)
    assert not unknown, f"{service_name}: {sorted(unknown)} are not settings of {info.settings}"
    # The endpoint must listen beyond the container's loopback, on the port the healthcheck uses.
    assert env[f"{info.prefix}_HTTP_HOST"] == "0.0.0.0"
    assert env[f"{info.prefix}_HTTP_PORT"] == str(HTTP_PORT)


@pytest.mark.parametrize("service_name", ["extractor", "lake-writer", "transformer", "warehouse-loader"])
def test_service_env_values_pass_the_settings_validation(
    compose: dict[str, Any], service_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = SERVICE_BY_COMMAND[f"cryptoflow-{service_name}"]
    env = service_env(pipeline_services(compose)[service_name])
    for name in list(os.environ):
        if name in allowed_env(info):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        settings = load_settings(info.settings_class())
    except ConfigError as error:
        pytest.fail(f"{service_name}: {error}")
    assert getattr(settings, "http_port") == HTTP_PORT  # noqa: B009
    assert getattr(settings, "nats_url") == "nats://nats:4222"  # noqa: B009
    assert getattr(settings, "nats_user") == service_name  # noqa: B009
    if info.lake:
        assert getattr(settings, "lake_url") == "s3://cryptoflow"  # noqa: B009
        assert getattr(settings, "s3_endpoint_url") == "http://minio:9000"  # noqa: B009


def test_service_urls_point_at_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in pipeline_services(compose).items():
        for key, value in service_env(service).items():
            if "://" not in value or key == "LAKE_URL":
                continue
            host = urlsplit(value).hostname
            assert host in services, f"{name}: {key}={value} names no compose service"


def test_extractor_reads_from_the_simulator_it_waits_for(compose: dict[str, Any]) -> None:
    sim = compose["services"]["exchange-sim"]
    args = build_parser().parse_args(command_of(sim)[1:])
    assert command_of(sim)[0] == "cryptoflow-exchange-sim"
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    extractor = pipeline_services(compose)["extractor"]
    url = urlsplit(service_env(extractor)["EXTRACTOR_EXCHANGE_URL"])
    assert (url.hostname, url.port) == ("exchange-sim", args.port)
    assert extractor["depends_on"]["exchange-sim"]["condition"] == "service_healthy"
    # The simulator serves the symbols the extractor asks for.
    assert args.symbols == service_env(extractor)["EXTRACTOR_SYMBOLS"]


def test_stores_are_ready_before_the_services_start(compose: dict[str, Any]) -> None:
    services = pipeline_services(compose)
    for name, service in services.items():
        info = SERVICE_BY_COMMAND[f"cryptoflow-{name}"]
        # The streams exist (made by admin) before a service, which may only read their info, starts.
        needs = {"nats-init": "service_completed_successfully"}
        if info.lake:
            needs["minio-init"] = "service_completed_successfully"
        if info.database:
            needs["postgres"] = "service_healthy"
        assert {k: v["condition"] for k, v in service["depends_on"].items()} == needs | (
            {"exchange-sim": "service_healthy"} if name == "extractor" else {}
        ), name
    bucket = urlsplit(service_env(services["lake-writer"])["LAKE_URL"]).hostname
    assert f"local/{bucket}" in " ".join(compose["services"]["minio-init"]["command"])


def test_nats_runs_jetstream_with_its_monitoring_port(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert nats["image"].startswith("nats:2.10")
    assert "--jetstream" in nats["command"] or "-js" in nats["command"]
    assert "8222" in nats["command"]
    assert any("8222/healthz" in part for part in nats["healthcheck"]["test"])


def test_bind_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_what_compose_runs(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    # Each replica by DNS: the compose service name resolves to all of its containers.
    targets = {
        f"{name}:{group['port']}"
        for job in config["scrape_configs"]
        for group in job.get("dns_sd_configs", [])
        for name in group["names"]
    }
    for name, service in pipeline_services(compose).items():
        assert f"{name}:{HTTP_PORT}" in targets
        assert name in compose["services"], "scrape targets use the compose service name"
        assert service["healthcheck"]["test"][-1].count(f":{HTTP_PORT}/readyz") == 1


def test_grafana_and_postgres_set_every_variable_their_provisioning_reads(compose: dict[str, Any]) -> None:
    grafana_env = service_env(compose["services"]["grafana"])
    for path in (GRAFANA_DIR / "provisioning").rglob("*.yml"):
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", path.read_text()):
            assert grafana_env.get(name), f"{path.name} reads ${name}, which compose does not set for grafana"
    postgres_env = service_env(compose["services"]["postgres"])
    for script in POSTGRES_INITDB.glob("*.sql"):
        for name in re.findall(r"\\getenv \w+ (\w+)", script.read_text()):
            assert postgres_env.get(name), f"{script.name} reads {name}, which compose does not set"
    assert postgres_env["CRYPTOFLOW_READER_USER"] == grafana_env["CRYPTOFLOW_READER_USER"] == "cryptoflow_reader"
    assert postgres_env["CRYPTOFLOW_READER_PASSWORD"] == grafana_env["CRYPTOFLOW_READER_PASSWORD"]
    loader_url = urlsplit(service_env(pipeline_services(compose)["warehouse-loader"])["DATABASE_URL"])
    assert loader_url.username == postgres_env["CRYPTOFLOW_OWNER_USER"], "the reader's default privileges follow it"
    assert loader_url.path.lstrip("/") == postgres_env["POSTGRES_DB"] == grafana_env["CRYPTOFLOW_POSTGRES_DB"]


# --- NATS access (docs/decisions/0036) ------------------------------------------------------------


def test_nats_allows_no_anonymous_access_and_uses_the_generated_authorization(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    command = command_of(nats)
    config = command[command.index("--config") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in nats["volumes"] if v.startswith(".")}
    source = next(REPO / src / Path(config).relative_to(dst) for dst, src in mounts.items() if config.startswith(dst))
    assert source == NATS_AUTHORIZATION
    text = source.read_text()
    assert text == generated_authorization(), "regenerate it: python -m cryptoflow_cli.access"
    assert "no_auth_user" not in text and "authorization {" in text
    # Every password the file reads comes from the server's environment, and is set.
    env = service_env(nats)
    for identity in identities():
        assert f"password: ${identity.password_variable}" in text
        assert env.get(identity.password_variable), identity.password_variable


def test_each_service_connects_as_its_own_nats_user(compose: dict[str, Any]) -> None:
    nats_env = service_env(compose["services"]["nats"])
    for name, service in pipeline_services(compose).items():
        env = service_env(service)
        assert env["NATS_USER"] == name
        assert env["NATS_PASSWORD"] == nats_env[password_variable(name)], name
    others = {service_env(s)["NATS_PASSWORD"] for s in pipeline_services(compose).values()}
    assert len(others) == len(pipeline_services(compose)), "one password per identity"


def test_streams_are_created_by_the_admin_before_the_services_start(compose: dict[str, Any]) -> None:
    init = compose["services"]["nats-init"]
    env = service_env(init)
    assert command_of(init) == ["python", "-m", "cryptoflow_runtime.streams"]
    assert env["NATS_USER"] == ADMIN
    assert env["NATS_PASSWORD"] == service_env(compose["services"]["nats"])[password_variable(ADMIN)]
    assert init["depends_on"] == {"nats": {"condition": "service_healthy"}}
    assert init["image"] == pipeline_services(compose)["extractor"]["image"]


def test_the_extractor_runs_as_many_replicas_as_asked_each_with_a_metrics_port(compose: dict[str, Any]) -> None:
    """Issue 11: extractor replicas share the jobs by lease (decision 0042), so compose may run several:
    `CRYPTOFLOW_EXTRACTOR_REPLICAS=3 docker compose up`; a host port range, one per replica."""
    extractor = compose["services"]["extractor"]
    assert extractor["deploy"]["replicas"] == "${CRYPTOFLOW_EXTRACTOR_REPLICAS:-1}"
    (port,) = extractor["ports"]
    host, ports, container = port.split(":")
    first, last = (int(p) for p in ports.split("-"))
    assert (host, container) == ("127.0.0.1", str(HTTP_PORT)) and last - first + 1 >= 3
