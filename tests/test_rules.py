"""Rule kinds against real Alertmanager and Prometheus (and a real HTTP server)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError

from prodline.activities.rules import RuleRun
from prodline.activities.rules.alerts import AlertsEvaluator
from prodline.activities.rules.http import HttpEvaluator
from prodline.activities.rules.prometheus import PrometheusEvaluator
from prodline.activities.rules.window import next_opening
from prodline.config.rules import Check, WindowRule
from prodline.contracts import RunContext

from conftest import service, step, wait_for, waiting_in


def unique(prefix: str = "checkout") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def evaluate(evaluator, rule: dict):
    context = RunContext(
        release_id="shop.checkout@1.0.0", application="shop", service="checkout", version="1.0.0",
        environment="production", base_dir=".",
    )  # fmt: skip
    return asyncio.run(evaluator.evaluate(RuleRun(context=context, rule=Check.model_validate(rule))))


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
    app = """
application: shop
environments:
  - name: staging
    checks:
      - command: {run: 'test ! -f svc/deployed'}
        name: smoke
        when: [before_deploy, after_deploy]
        on_failure: wait
        timeout: 1h
        interval: 100ms
"""
    service_file = project(service(step("deploy", "touch deployed")), app=app)
    result = cli.run("release", "start", str(service_file), "--version", "4.0.2", "--wait", "--json", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["reason"].startswith(
        "staging: check smoke (after deploy) failed: `test ! -f svc/deployed` exited"
    )


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
    wrong_body = evaluate(
        HttpEvaluator(), {"http": {"url": metrics.url, "body": 'version="9', "attempts": 2, "retry_interval": "50ms"}}
    )
    assert wrong_body.outcome == "failed" and "(after 2 tries)" in wrong_body.reason
    missing = evaluate(HttpEvaluator(), {"http": {"url": metrics.url.replace("/metrics", "/nope"), "attempts": 1}})
    assert missing.outcome == "failed" and "expected 200" in missing.reason


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
