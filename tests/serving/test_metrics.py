"""serving/edge/metrics.py: a request's series are counted every time, whether or not they were seen before."""

from __future__ import annotations

from serving.edge.metrics import CLIENT_CLOSED, Metrics


def test_repeated_requests_count_in_their_own_series() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe_request("tab", "1", "/invocations", 200, 0.002)
    metrics.observe_request("tab", "1", "/invocations", 400, 0.001)
    metrics.observe_request("tab", "2", "/invocations", 200, 0.003)
    metrics.observe_request("", "", "unmatched", 404, 0.001)
    metrics.observe_request("tab", "1", "/invocations", CLIENT_CLOSED, 0.001)
    text = metrics.render().decode()
    assert 'kiln_requests_total{endpoint="/invocations",model="tab",status="200",version="1"} 3.0' in text
    assert 'kiln_requests_total{endpoint="/invocations",model="tab",status="200",version="2"} 1.0' in text
    assert 'kiln_request_errors_total{code="400",model="tab",version="1"} 1.0' in text
    assert 'kiln_request_errors_total{code="404",model="",version=""} 1.0' in text
    assert 'code="499"' not in text  # a client that went away is not an error of the server
    assert 'kiln_request_duration_seconds_count{endpoint="/invocations",model="tab",version="1"} 5.0' in text
    assert 'kiln_request_duration_seconds_count{endpoint="unmatched"' not in text  # no model, no latency
