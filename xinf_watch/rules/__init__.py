"""The rule engine: events and a clock in, alert transitions out."""
