"""The observability harness works against the real Prometheus and Alertmanager."""

from __future__ import annotations

import uuid

from observability import sample_value


def test_alert_is_active_at_once_and_gone_once_resolved(alertmanager):
    service = f"checkout-{uuid.uuid4().hex[:6]}"
    labels = {"alertname": "HighErrorRate", "service": service, "severity": "page"}
    assert alertmanager.alerts({"service": service}) == []

    alertmanager.post_alert(labels, {"summary": "5xx above 2%"})
    # No polling: group_wait (30s in the generated config) only delays notifications.
    [alert] = alertmanager.alerts({"service": service})
    assert alert["labels"] == labels
    assert alert["annotations"] == {"summary": "5xx above 2%"}
    assert alert["status"]["state"] == "active"

    alertmanager.resolve_alert(labels)
    assert alertmanager.alerts({"service": service}) == []
    assert alertmanager.alerts({"service": service}, active=False) == []


def test_filter_matches_only_the_given_service(alertmanager):
    ours, theirs = f"checkout-{uuid.uuid4().hex[:6]}", f"billing-{uuid.uuid4().hex[:6]}"
    alertmanager.post_alert({"alertname": "Down", "service": theirs})
    assert alertmanager.alerts({"service": ours}) == []
    response = alertmanager.http.get(
        f"{alertmanager.url}/api/v2/alerts", params={"active": "true", "filter": f'service="{theirs}"'}
    )
    assert [a["labels"]["service"] for a in response.json()] == [theirs]
    alertmanager.resolve_alert({"alertname": "Down", "service": theirs})


def test_metric_change_is_visible_through_promql(prometheus, metrics):
    name = f"prodline_errors_{uuid.uuid4().hex[:6]}"
    metrics.set(name, 7, {"service": "checkout"})
    data = prometheus.wait_for_value(f'{name}{{service="checkout"}}', lambda d: sample_value(d) == 7, timeout=5)
    [sample] = data["result"]
    assert sample["metric"] == {
        "__name__": name,
        "service": "checkout",
        "job": "prodline-test",
        "instance": metrics.address,
    }

    # The new value comes with a later scrape and replaces the old one (the 5m lookback keeps
    # nothing stale). timestamp() is the scrape time of the sample a query returns.
    scraped_7 = sample_value(prometheus.query(f'timestamp({name}{{service="checkout"}})')["data"])
    metrics.set(name, 0, {"service": "checkout"})
    prometheus.wait_for_value(f"sum({name})", lambda d: sample_value(d) == 0, timeout=5)
    scraped_0 = sample_value(prometheus.query(f'timestamp({name}{{service="checkout"}})')["data"])
    assert scraped_0 is not None and scraped_7 is not None and scraped_0 > scraped_7

    metrics.remove(name)  # staleness marker on the next scrape: gone in ~1s, not after 5m lookback
    prometheus.wait_for_value(name, lambda d: d["result"] == [], timeout=5)


def test_query_response_shapes(prometheus):
    bad = prometheus.query_response("sum(rate(foo[5m]")
    assert bad.status_code == 400
    body = bad.json()
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"
    assert "parse error" in body["error"]

    assert prometheus.query("prodline_no_such_metric") == {
        "status": "success",
        "data": {"resultType": "vector", "result": []},
    }

    scalar = prometheus.query("scalar(vector(42))")
    assert scalar["data"]["resultType"] == "scalar"
    timestamp, value = scalar["data"]["result"]
    assert isinstance(timestamp, float) and value == "42"
    assert sample_value(scalar["data"]) == 42.0
