"""The HTTP edge: the app, its middleware and transport, the three protocols (task routes, KServe V2,
/invocations) as thin codecs around serving/dataplane.py, the pages and the Prometheus metrics."""
