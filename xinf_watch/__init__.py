"""xinf-watch: per-key monitoring and alerting for Xinference and the gateways in front of it."""

__version__ = "0.1.0"
