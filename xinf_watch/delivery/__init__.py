"""Alert text and delivery: the outbox senders, apprise and Alertmanager targets, the journal."""
