"""xinf-watch: per-key monitoring and alerting for Xinference and the gateways in front of it."""

from pathlib import Path

__version__ = "0.1.0"

DATA = Path(__file__).resolve().parent / "data"  # packaged: routes.yaml, and rules/rules.yaml as rules.yaml
SHIPPED_RULES = DATA / "rules.yaml"
