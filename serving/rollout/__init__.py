"""Safe rollout: the canary router and its guard rails, the shadow comparison, drift monitoring, capture and
the off-path worker that runs them after the answer."""
