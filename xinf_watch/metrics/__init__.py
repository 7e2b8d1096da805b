"""Counting events into Prometheus metrics, and the exposition."""
