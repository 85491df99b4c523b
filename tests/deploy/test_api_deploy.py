"""The read API in docker-compose and Prometheus: real settings, the read-only identities (NATS'
`consumer`, PostgreSQL's cryptoflow_reader), the image's command, a scrape job."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptoflow_cli.access import CONSUMER, password_variable
from cryptoflow_runtime import ConfigError, load_settings

from .support import API, COMPOSE_FILE, PROMETHEUS_DIR, allowed_env
from .test_compose import HTTP_PORT, command_of, service_env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def test_compose_runs_the_api_from_the_image_with_real_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = compose["services"]["api"]
    assert command_of(api) == [API.command]
    assert api["image"] == compose["services"]["extractor"]["image"]
    env = service_env(api)
    assert not set(env) - allowed_env(API), sorted(set(env) - allowed_env(API))
    for name in list(os.environ):
        if name in allowed_env(API):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        settings = load_settings(API.settings_class())
    except ConfigError as error:
        pytest.fail(str(error))
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", HTTP_PORT)
    assert api["healthcheck"]["test"][-1].count(f":{HTTP_PORT}/readyz") == 1
    assert {"nats-init", "postgres", "warehouse-loader"} <= set(api["depends_on"])


def test_compose_api_reads_with_the_read_only_identities(compose: dict[str, Any]) -> None:
    env = service_env(compose["services"]["api"])
    nats_env = service_env(compose["services"]["nats"])
    assert env["NATS_USER"] == CONSUMER
    assert env["NATS_PASSWORD"] == nats_env[password_variable(CONSUMER)]
    database = urlsplit(env["DATABASE_URL"])
    postgres_env = service_env(compose["services"]["postgres"])
    assert database.username == postgres_env["CRYPTOFLOW_READER_USER"] == "cryptoflow_reader"
    assert database.password == postgres_env["CRYPTOFLOW_READER_PASSWORD"]
    assert database.hostname == "postgres" and database.path == "/" + postgres_env["POSTGRES_DB"]


def test_prometheus_scrapes_the_api_with_its_component_label() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "cryptoflow-api")
    (group,) = job["dns_sd_configs"]
    assert (group["type"], group["port"], group["names"]) == ("A", HTTP_PORT, ["api"])
    assert job["relabel_configs"] == [{"source_labels": ["__meta_dns_name"], "target_label": "component"}]
