"""What the gateway tells the tools a team watches it with: Prometheus metrics (metrics.py) and OpenTelemetry
traces (tracing.py). Neither ever carries a secret or an argument."""
