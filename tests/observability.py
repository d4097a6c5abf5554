"""Real Prometheus and Alertmanager for tests of the observability release checks.

Plain module (not a conftest): ``from observability import ...`` works from tests
because pytest puts ``tests/`` on sys.path (there is no tests/__init__.py).
Everything binds 127.0.0.1 on free ports; nothing touches 9090/9093/9094. The
processes run under :class:`prodline.workers.supervisor.ManagedProcess`. What the
harness relies on (versions, timings, response shapes, measured) is in
``docs/observability.md``.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from prodline.workers.supervisor import ManagedProcess, ProcessFailed, free_port

POLL = 0.05  # seconds between value polls
START_TIMEOUT = 20.0  # seconds for a binary to answer /-/ready
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
HOST = "127.0.0.1"

#: Names tried, in order, for each binary: Debian's name first, upstream's second.
BINARY_NAMES: dict[str, tuple[str, ...]] = {
    "prometheus": ("prometheus",),
    "prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager"),
}


# --------------------------------------------------------------------------- binaries


def find_binary(name: str) -> str | None:
    """Absolute path of ``name`` (or its upstream alias), or None when not installed.

    Looks on ``PATH`` first, then in ``/usr/bin`` and ``/usr/sbin`` (where Debian
    puts them) in case the test runner's ``PATH`` is minimal.
    """
    for candidate in BINARY_NAMES.get(name, (name,)):
        found = shutil.which(candidate) or shutil.which(candidate, path="/usr/bin:/usr/sbin:/usr/local/bin")
        if found:
            return found
    return None


def require_binary(name: str) -> str:
    """Path of ``name``; skips the test when it is missing, but fails it when ``CI=true``."""
    found = find_binary(name)
    if found:
        return found
    reason = f"{name} is not installed (apt-get install -y --no-install-recommends prometheus prometheus-alertmanager)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pragma: no cover - pytest.skip raises


# --------------------------------------------------------------------------- processes


class _Server:
    """A binary on 127.0.0.1:<free port>, logging to ``<workdir>/<name>.log``."""

    name = "server"
    binary_name = ""

    def __init__(self, workdir: str | os.PathLike[str], binary: str | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or require_binary(self.binary_name)
        self.log_path = self.workdir / f"{self.name}.log"
        self.port = 0
        self.http = httpx.Client(timeout=5.0)
        self.process = ManagedProcess(
            self.name, self.argv, self.log_path, cwd=self.workdir, ready=self._ready, stop_timeout=STOP_TIMEOUT
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def argv(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration files; called before every start attempt."""

    def start(self, timeout: float = START_TIMEOUT) -> _Server:
        if self.process.running:
            return self
        # free_port() can race with another process grabbing the port before the
        # binary binds it; a fresh port on "address already in use" fixes that.
        for attempt in range(3):
            self.port = free_port(HOST)
            self.prepare()
            try:
                self.process.start(timeout)
                return self
            except ProcessFailed:
                if "address already in use" not in self.log_tail().lower() or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _ready(self) -> bool:
        try:
            return self.http.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> None:
        self.process.stop()
        self.http.close()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Alertmanager(_Server):
    """``prometheus-alertmanager`` with one ``null`` receiver and no clustering.

    ``group_wait`` etc. are configurable but only delay notifications (of which
    there are none: the receiver is null); they never delay ``GET /api/v2/alerts``.
    """

    name = "alertmanager"
    binary_name = "prometheus-alertmanager"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        binary: str | None = None,
        group_wait: str = "30s",
        resolve_timeout: str = "5m",
    ):
        super().__init__(workdir, binary)
        self.group_wait, self.resolve_timeout = group_wait, resolve_timeout
        self.config_path = self.workdir / "alertmanager.yml"
        self.storage_path = self.workdir / "data"

    def prepare(self) -> None:
        self.storage_path.mkdir(exist_ok=True)
        self.config_path.write_text(
            "global:\n"
            f"  resolve_timeout: {self.resolve_timeout}\n"
            "route:\n"
            "  receiver: 'null'\n"
            f"  group_wait: {self.group_wait}\n"
            "  group_interval: 5m\n"
            "  repeat_interval: 4h\n"
            "receivers:\n"
            "  - name: 'null'\n"
        )

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            "--cluster.listen-address=",  # empty: no gossip port, no peers
            "--log.level=info",
        ]

    def post_alert(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
    ) -> None:
        """``POST /api/v2/alerts`` with one alert (naive datetimes are taken as UTC).

        Without ``ends_at`` Alertmanager sets endsAt = now + resolve_timeout (5m).
        """
        alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
        if starts_at is not None:
            alert["startsAt"] = _rfc3339(starts_at)
        if ends_at is not None:
            alert["endsAt"] = _rfc3339(ends_at)
        response = self.http.post(f"{self.url}/api/v2/alerts", json=[alert])
        response.raise_for_status()

    def resolve_alert(self, labels: Mapping[str, str]) -> None:
        """Re-post the alert with endsAt in the past: it leaves the active list at once."""
        now = datetime.now(UTC)
        # startsAt must not be after endsAt or Alertmanager rejects the alert (400).
        self.post_alert(labels, starts_at=now - timedelta(minutes=1), ends_at=now - timedelta(seconds=1))

    def alerts(self, filter: Mapping[str, str] | None = None, active: bool = True, **params: Any) -> list[dict]:
        """``GET /api/v2/alerts?active=…&filter=name="value"…`` (equality matchers)."""
        query: list[tuple[str, str]] = [("active", str(active).lower())]
        query += [(key, str(value).lower() if isinstance(value, bool) else str(value)) for key, value in params.items()]
        query += [("filter", f'{name}="{value}"') for name, value in (filter or {}).items()]
        response = self.http.get(f"{self.url}/api/v2/alerts", params=query)
        response.raise_for_status()
        return response.json()

    def wait_for_alerts(
        self, predicate: Callable[[list[dict]], bool], filter: Mapping[str, str] | None = None, timeout: float = 5.0
    ) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.alerts(filter)
            if predicate(found):
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"alerts {filter} never matched within {timeout}s; last: {found}")
            time.sleep(POLL)


class MetricsTarget:
    """A ``/metrics`` endpoint (Prometheus text format 0.0.4) with settable gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.scrapes = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = target.render().encode()
                target.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    @staticmethod
    def _key(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._gauges.setdefault(name, {})[self._key(labels)] = float(value)

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Drop one series (or every series of ``name`` when labels is None)."""
        with self._lock:
            if labels is None:
                self._gauges.pop(name, None)
            else:
                self._gauges.get(name, {}).pop(self._key(labels), None)

    def render(self) -> str:
        def number(value: float) -> str:
            if math.isnan(value):
                return "NaN"
            if math.isinf(value):
                return "+Inf" if value > 0 else "-Inf"
            return repr(value)

        def escape(value: str) -> str:
            return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")

        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._gauges.items()):
                lines.append(f"# TYPE {name} gauge")
                for key, value in sorted(series.items()):
                    labels = ",".join(f'{k}="{escape(v)}"' for k, v in key)
                    lines.append(f"{name}{{{labels}}} {number(value)}" if labels else f"{name} {number(value)}")
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> MetricsTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sample_value(data: Mapping[str, Any]) -> float | None:
    """The number in a query's ``data``: a scalar, or a vector's single sample.

    None for an empty vector; ValueError for several series (use ``data["result"]``).
    """
    result = data["result"]
    if data["resultType"] in ("scalar", "string"):
        return float(result[1])
    if data["resultType"] == "vector":
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"{len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])
    raise ValueError(f"resultType {data['resultType']} has no single value")


class Prometheus(_Server):
    """``prometheus`` scraping the given targets every 1s (evaluation every 1s too).

    ``targets`` are MetricsTarget objects or "host:port" strings; ``rules`` is the
    text of an optional rule file; ``alertmanager`` (an Alertmanager or its URL)
    makes Prometheus send its firing alerts there.
    """

    name = "prometheus"
    binary_name = "prometheus"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        targets: Sequence[MetricsTarget | str] = (),
        binary: str | None = None,
        rules: str | None = None,
        alertmanager: Alertmanager | str | None = None,
        extra_args: Sequence[str] = (),
        wait_for_targets: bool = True,
    ):
        super().__init__(workdir, binary)
        self.targets = list(targets)
        self.rules, self.alertmanager, self.extra_args = rules, alertmanager, list(extra_args)
        self.wait_for_targets = wait_for_targets
        self.config_path = self.workdir / "prometheus.yml"
        self.rules_path = self.workdir / "rules.yml"
        self.storage_path = self.workdir / "tsdb"

    def prepare(self) -> None:
        addresses = [t.address if isinstance(t, MetricsTarget) else t for t in self.targets]
        config = (
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: prodline-test\n"
            "    static_configs:\n"
            f"      - targets: [{', '.join(repr(a) for a in addresses)}]\n"
        )
        if self.rules is not None:
            self.rules_path.write_text(self.rules)
            config += f"rule_files: [{str(self.rules_path)!r}]\n"
        if self.alertmanager is not None:
            am = self.alertmanager.url if isinstance(self.alertmanager, Alertmanager) else self.alertmanager
            config += (
                "alerting:\n"
                "  alertmanagers:\n"
                f"    - static_configs: [{{targets: [{am.split('://', 1)[-1].rstrip('/')!r}]}}]\n"
            )
        self.config_path.write_text(config)

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            f"--web.external-url=http://{HOST}:{self.port}/",  # not the machine's hostname
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
            *self.extra_args,
        ]

    def start(self, timeout: float = START_TIMEOUT) -> Prometheus:
        """Start, then (by default) wait for the first successful scrape of every
        MetricsTarget: Prometheus 2.42 applies its target list only after a fixed
        5s throttle, so ``up`` first appears ~5.5s after ``/-/ready``."""
        if self.process.running:
            return self
        super().start(timeout)
        expected = {t.address for t in self.targets if isinstance(t, MetricsTarget)}
        if self.wait_for_targets and expected:
            try:
                self.wait_for_value(
                    'up{job="prodline-test"} == 1',
                    lambda d: expected <= {s["metric"]["instance"] for s in d["result"]},
                    timeout=timeout,
                )
            except BaseException:
                self.stop()
                raise
        return self

    def query_response(self, expr: str, time: float | None = None) -> httpx.Response:
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = time
        return self.http.get(f"{self.url}/api/v1/query", params=params)

    def query(self, expr: str, time: float | None = None) -> dict:
        """The JSON body of ``GET /api/v1/query`` - also for errors (status "error").

        Success: {"status": "success", "data": {"resultType": ..., "result": ...}}.
        """
        return self.query_response(expr, time).json()

    def wait_for_value(self, expr: str, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """Poll ``expr`` until ``predicate(data)`` holds; returns that ``data``.

        ``data`` is the body's "data" member ({"resultType", "result"}); combine
        with ``sample_value``: ``wait_for_value("x", lambda d: sample_value(d) == 3)``.
        """
        deadline = time.monotonic() + timeout
        body: dict = {}
        while True:
            body = self.query(expr)
            if body.get("status") != "success":
                raise ValueError(f"query {expr!r} failed: {body}")
            if predicate(body["data"]):
                return body["data"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} never satisfied the predicate within {timeout}s; last: {body['data']}")
            time.sleep(POLL)
