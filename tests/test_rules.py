"""Rule kinds against real Alertmanager and Prometheus (and a real HTTP server).

What those servers cannot be made to do on demand (a 4xx or 5xx answer, a refused
connection) runs the same evaluators through the real httpx client with an injected
``httpx.MockTransport``, as ``RuleActivities`` injects it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from prodline.activities.rules import RuleActivities
from prodline.activities.rules.alerts import AlertsEvaluator
from prodline.activities.rules.base import RuleEvaluator
from prodline.activities.rules.command import CommandEvaluator
from prodline.activities.rules.http import HttpEvaluator
from prodline.activities.rules.prometheus import PrometheusEvaluator
from prodline.activities.rules.window import next_opening
from prodline.config.rules import Check, WindowRule
from prodline.contracts import NON_RETRYABLE_CONFIG, RuleResult, RuleRun

from conftest import run_context, service, step, wait_for, waiting_in


def unique(prefix: str = "checkout") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


CONTEXT = run_context()


def rule_run(rule: dict) -> RuleRun:
    return RuleRun(context=CONTEXT, rule=Check.model_validate(rule))


def evaluate(evaluator: RuleEvaluator[Any], rule: dict) -> RuleResult:
    run = rule_run(rule)
    return asyncio.run(evaluator.evaluate(run, run.rule.spec))


class Api:
    """A fake HTTP server behind ``httpx.MockTransport``: the real client, an injected transport."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]):
        self.requests: list[httpx.Request] = []
        self._answer = answer
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("Connection refused", request=request)


# --- Alertmanager ----------------------------------------------------------------------------


def seed_app(alertmanager_url: str, label: str, after: str = "5s") -> str:
    """The seed's production rules: staging stable, no alerts before and after."""
    return f"""
application: shop
protections:
  no-alerts:
    alerts: {{url: "{alertmanager_url}", matchers: ['service="{{{{ args.service }}}}"']}}
    args: {{service: null}}
environments:
  - name: staging
  - name: production
    preconditions:
      - stable: {{environment: staging}}
    checks:
      - use: no-alerts
        with: {{service: {label}}}
        when: [before_deploy, after_deploy]
        for: {after}
        interval: 200ms
"""


def test_a_firing_alert_holds_the_release_before_deploying(cli, worker, project, tmp_path, alertmanager):
    label = unique()
    alert = {"alertname": "HighErrorRate", "service": label}
    alertmanager.post_alert(alert)
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')),
        app=seed_app(alertmanager.url, label, "1s"),
    )
    release = project.release_id("4.0.0")
    waiting = cli.spawn("release", "start", str(service_file), "--version", "4.0.0", "--wait")
    status = waiting_in(cli, release, "production", "HighErrorRate")
    assert f'1 alert(s) firing for service="{label}"' in status["environments"][1]["waiting_on"]
    assert (tmp_path / "deployed-staging").exists() and not (tmp_path / "deployed-production").exists()
    alertmanager.resolve_alert(alert)
    assert waiting.wait(60) == 0
    assert (tmp_path / "deployed-production").exists()


def test_an_alert_firing_after_deploying_fails_the_release(cli, worker, project, tmp_path, alertmanager):
    label = unique()
    service_file = project(
        service(step("deploy", 'touch "../deployed-$PRODLINE_ENVIRONMENT"')),
        app=seed_app(alertmanager.url, label, "20s"),
    )
    waiting = cli.spawn("release", "start", str(service_file), "--version", "4.0.1", "--wait", "--json")
    wait_for(lambda: (tmp_path / "deployed-production").exists(), what="production to be deployed")
    alertmanager.post_alert({"alertname": "LatencyBudgetBurn", "service": label})
    assert waiting.wait(60) == 1
    outcome = json.loads(waiting.stdout.read())
    assert outcome["state"] == "failed"
    assert outcome["reason"].startswith("production: check no-alerts (after deploy) failed: 1 alert(s) firing")
    assert "LatencyBudgetBurn" in outcome["reason"]


def test_a_check_failing_after_deploying_fails_even_when_it_would_wait_before(cli, worker, project, tmp_path):
    # `on_failure: wait` holds a release before deploying; once the version is live there is
    # nothing to wait for, so the failure ends the release at once (not after `timeout`).
    # The step and the check run in copies of their bundles: both name the test's folder by path.
    app = f"""
application: shop
environments:
  - name: staging
    checks:
      - command: {{run: 'test ! -f {tmp_path}/deployed'}}
        name: smoke
        when: [before_deploy, after_deploy]
        on_failure: wait
        timeout: 1h
        interval: 100ms
"""
    service_file = project(service(step("deploy", f"touch {tmp_path}/deployed")), app=app)
    result = cli.run("release", "start", str(service_file), "--version", "4.0.2", "--wait", "--json", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    reason = json.loads(result.stdout)["reason"]  # the command is shortened in the reason
    assert reason.startswith("staging: check smoke (after deploy) failed: `test ! -f /"), reason
    assert reason.endswith("` exited with code 1"), reason


def test_alerts_rule_passes_until_a_matching_alert_fires(alertmanager):
    label = unique()
    rule = {"alerts": {"url": alertmanager.url, "matchers": {"service": label}}}
    assert evaluate(AlertsEvaluator(), rule).passed
    alertmanager.post_alert({"alertname": "DiskFull", "service": label})
    result = evaluate(AlertsEvaluator(), rule)
    assert result.outcome == "failed" and "DiskFull" in result.reason


def test_unreachable_alertmanager_is_a_retryable_error():
    with pytest.raises(ApplicationError) as caught:
        evaluate(
            AlertsEvaluator(), {"alerts": {"url": "http://127.0.0.1:1", "matchers": {"service": "x"}, "timeout": "1s"}}
        )
    assert not caught.value.non_retryable and "cannot reach Alertmanager" in caught.value.message


# --- Prometheus ------------------------------------------------------------------------------


def prometheus_app(url: str, query: str, condition: str = "< 0.01", extra: str = "") -> str:
    return f"""
application: shop
environments:
  - name: staging
    checks:
      - prometheus: {{url: "{url}", query: '{query}', condition: "{condition}"{extra}}}
        name: error-rate
        when: [before_deploy]
        on_failure: fail
"""


def test_a_metric_over_threshold_fails_the_release(cli, worker, project, tmp_path, prometheus, metrics):
    label = unique()
    metrics.set("http_error_ratio", 0.05, {"service": label})
    prometheus.wait_for_value(f'http_error_ratio{{service="{label}"}}', lambda d: bool(d["result"]))
    app = prometheus_app(prometheus.url, f'http_error_ratio{{service="{label}"}}')
    service_file = project(service(step("deploy", "touch ../deployed")), app=app)
    result = cli.run("release", "start", str(service_file), "--version", "4.1.0", "--wait", "--json")
    assert result.returncode == 1
    reason = json.loads(result.stdout)["reason"]
    assert reason.startswith("staging: check error-rate (before deploy) failed:")
    assert "not < 0.01: {__name__=http_error_ratio, instance=" in reason and f"service={label}}} = 0.05" in reason
    assert not (tmp_path / "deployed").exists()

    metrics.set("http_error_ratio", 0.001, {"service": label})
    prometheus.wait_for_value(f'http_error_ratio{{service="{label}"}} < 0.01', lambda d: bool(d["result"]))
    again = cli.run("release", "start", str(service_file), "--version", "4.1.0", "--wait")
    assert again.returncode == 0, again.stdout
    assert (tmp_path / "deployed").exists()


def test_malformed_promql_fails_before_anything_is_deployed(cli, worker, project, tmp_path, prometheus):
    service_file = project(
        service(step("deploy", "touch ../deployed")), app=prometheus_app(prometheus.url, "sum(rate(x[5m]")
    )
    result = cli.run("release", "start", str(service_file), "--version", "4.1.1", "--wait", "--json")
    assert result.returncode == 1
    reason = json.loads(result.stdout)["reason"]
    assert "could not be evaluated: Prometheus rejected the request (400): bad_data" in reason
    assert "parse error" in reason
    assert not (tmp_path / "deployed").exists()


@pytest.mark.parametrize(
    ("no_data", "outcome"), [("pass", "passed"), ("fail", "failed"), ("inconclusive", "inconclusive")]
)
def test_no_data_has_its_configured_outcome(prometheus, no_data, outcome):
    rule = {
        "prometheus": {
            "url": prometheus.url,
            "query": f"absent_metric_{uuid.uuid4().hex}",
            "condition": "< 1",
            "no_data": no_data,
        }
    }
    result = evaluate(PrometheusEvaluator(), rule)
    assert result.outcome == outcome and "returned no data" in result.reason


def test_scalar_results_are_compared_too(prometheus):
    assert evaluate(
        PrometheusEvaluator(),
        {"prometheus": {"url": prometheus.url, "query": "scalar(vector(3))", "condition": ">= 3"}},
    ).passed
    failed = evaluate(PrometheusEvaluator(), {"prometheus": {"url": prometheus.url, "query": "42", "condition": "< 1"}})
    assert failed.outcome == "failed" and "scalar = 42" in failed.reason


# --- HTTP --------------------------------------------------------------------------------------


def test_http_check_matches_status_and_body(metrics):
    metrics.set("build_info", 1, {"version": "4.2.0"})
    assert evaluate(HttpEvaluator(), {"http": {"url": metrics.url, "body": 'version="4\\.2\\.0"'}}).passed
    wrong_body = evaluate(HttpEvaluator(), {"http": {"url": metrics.url, "body": 'version="9'}})
    assert (
        wrong_body.outcome == "failed" and wrong_body.reason == f"GET {metrics.url}: body does not match 'version=\"9'"
    )
    missing = evaluate(HttpEvaluator(), {"http": {"url": metrics.url.replace("/metrics", "/nope")}})
    assert missing.outcome == "failed" and "answered 404, expected 200" in missing.reason


HEALTH = "http://checkout.test/healthz"


def test_http_rule_asks_once_per_evaluation_whatever_its_attempts():
    # Tolerating a blip is `failures_allowed` (re-evaluated every `interval` by the workflow) and
    # Temporal's retry policy: `attempts` from older configs is still accepted, and loops no more.
    api = Api(lambda request: httpx.Response(503))
    result = evaluate(HttpEvaluator(api.transport), {"http": {"url": HEALTH, "attempts": 3, "retry_interval": "10ms"}})
    assert result.outcome == "failed" and result.reason == f"GET {HEALTH} answered 503, expected 200"
    assert len(api.requests) == 1


def test_an_endpoint_that_does_not_answer_fails_the_http_check():
    api = Api(refused)
    result = evaluate(HttpEvaluator(api.transport), {"http": {"url": HEALTH}})
    assert result.outcome == "failed" and result.reason == f"GET {HEALTH} failed: Connection refused"


# --- the APIs rules call: what is retried and what is not -------------------------------------

ALERTS = {"alerts": {"url": "http://alertmanager.test", "matchers": {"service": "checkout"}}}
PROMQL = {"prometheus": {"url": "http://prometheus.test", "query": "sum(rate(x[5m]", "condition": "< 1"}}
BOTH_APIS = [
    pytest.param(AlertsEvaluator, ALERTS, "Alertmanager", "http://alertmanager.test/api/v2/alerts", id="alerts"),
    pytest.param(PrometheusEvaluator, PROMQL, "Prometheus", "http://prometheus.test/api/v1/query", id="prometheus"),
]


def test_alertmanager_is_asked_for_active_unsilenced_alerts_that_match():
    api = Api(lambda request: httpx.Response(200, json=[]))
    assert evaluate(AlertsEvaluator(api.transport), ALERTS).passed
    (request,) = api.requests
    assert request.url.path == "/api/v2/alerts"
    assert request.url.params.multi_items() == [
        ("active", "true"), ("silenced", "false"), ("inhibited", "false"), ("filter", 'service="checkout"'),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("evaluator", "rule", "answer", "explained"),
    [
        # Alertmanager explains with a bare JSON string, Prometheus with errorType and error.
        (AlertsEvaluator, ALERTS, {"json": 'bad matcher format: service="'}, 'bad matcher format: service="'),
        (
            PrometheusEvaluator, PROMQL,
            {"json": {"status": "error", "errorType": "bad_data", "error": "1:14: parse error: unclosed left parenthesis"}},
            "bad_data: 1:14: parse error: unclosed left parenthesis",
        ),
        (AlertsEvaluator, ALERTS, {"text": "<html>forbidden by proxy</html>"}, "<html>forbidden by proxy</html>"),
    ],
)  # fmt: skip
def test_a_4xx_answer_means_a_wrong_rule_and_is_not_retried(evaluator, rule, answer, explained):
    api = Api(lambda request: httpx.Response(400, **answer))
    with pytest.raises(ApplicationError) as caught:
        evaluate(evaluator(api.transport), rule)
    what = "Alertmanager" if evaluator is AlertsEvaluator else "Prometheus"
    assert caught.value.message == f"{what} rejected the request (400): {explained}"
    assert caught.value.non_retryable and caught.value.type == NON_RETRYABLE_CONFIG
    assert len(api.requests) == 1


@pytest.mark.parametrize(("evaluator", "rule", "what", "url"), BOTH_APIS)
def test_a_5xx_answer_is_retried(evaluator, rule, what, url):
    api = Api(lambda request: httpx.Response(503, text="upstream overloaded"))
    with pytest.raises(ApplicationError) as caught:
        evaluate(evaluator(api.transport), rule)
    assert caught.value.message == f"{what} answered 503: upstream overloaded"
    assert not caught.value.non_retryable


@pytest.mark.parametrize(("evaluator", "rule", "what", "url"), BOTH_APIS)
def test_an_api_that_cannot_be_reached_is_retried(evaluator, rule, what, url):
    with pytest.raises(ApplicationError) as caught:
        evaluate(evaluator(Api(refused).transport), rule)
    assert caught.value.message == f"cannot reach {what} at {url}: Connection refused"
    assert not caught.value.non_retryable


@pytest.mark.parametrize(("evaluator", "rule", "what", "url"), BOTH_APIS)
def test_an_answer_that_is_not_json_is_retried(evaluator, rule, what, url):
    api = Api(lambda request: httpx.Response(200, text="<html>login</html>"))
    with pytest.raises(ApplicationError) as caught:
        evaluate(evaluator(api.transport), rule)
    assert caught.value.message == f"{what} answered with something that is not JSON"
    assert not caught.value.non_retryable


async def test_rule_activities_give_their_transport_and_clock_to_the_evaluators():
    client = await Client.connect("127.0.0.1:1", lazy=True)  # only `stable` would use it
    api = Api(lambda request: httpx.Response(200, text="ok"))
    thursday_16_00_in_berlin = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    activities = RuleActivities(client, transport=api.transport, clock=lambda: thursday_16_00_in_berlin)

    health = await activities.evaluate_rule(rule_run({"http": {"url": HEALTH, "body": "ok"}}))
    assert health.passed and [str(r.url) for r in api.requests] == [HEALTH]
    window = BERLIN_WORKDAYS.model_dump()
    closed = await activities.evaluate_rule(rule_run({"window": window}))
    assert closed.outcome == "pending" and closed.wait_until == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert "opens Mon 2026-11-30 09:00 Europe/Berlin" in closed.reason


# --- command checks ------------------------------------------------------------------------------


def test_a_failing_multi_line_check_is_named_by_its_first_line():
    script = "echo checking queues\necho 'orders queue is backed up' >&2\nexit 1\n"
    result = evaluate(CommandEvaluator(), {"command": {"run": script}})
    assert result.outcome == "failed"
    assert result.reason == "`echo checking queues…` exited with code 1: checking queues\norders queue is backed up"


def test_a_check_script_that_is_missing_says_what_its_exit_code_means():
    result = evaluate(CommandEvaluator(), {"command": {"run": "./no-such-check.sh"}})
    assert result.reason == (
        "`./no-such-check.sh` exited with code 127 (command not found): /bin/sh: 1: ./no-such-check.sh: not found"
    )


# --- deploy windows ------------------------------------------------------------------------------

BERLIN_WORKDAYS = WindowRule(days=["mon", "tue", "wed", "thu"], hours="09:00-16:00", timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        ("2026-11-26T14:59:00+00:00", None),  # Thursday 15:59 in Berlin: open
        ("2026-11-26T15:00:00+00:00", "2026-11-30T08:00:00+00:00"),  # Thursday 16:00: closed until Monday 09:00
        ("2026-11-30T07:59:00+00:00", "2026-11-30T08:00:00+00:00"),  # Monday 08:59
        ("2026-03-27T12:00:00+00:00", "2026-03-30T07:00:00+00:00"),  # Friday; Monday after the DST change is UTC+2
    ],
)
def test_deploy_window_knows_when_it_next_opens(now, opens):
    result = next_opening(BERLIN_WORKDAYS, datetime.fromisoformat(now))
    assert result == (datetime.fromisoformat(opens) if opens else None)
    if result is not None:
        assert result.tzinfo == UTC
