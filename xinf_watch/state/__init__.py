"""The SQLite state store: read positions, counters, rule state and the outbox, committed together."""
