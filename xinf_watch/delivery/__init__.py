"""Alert text and delivery: `text` (titles and bodies for people), `target` (what a target is),
`apprise_target` and `alertmanager` (the two kinds), `routing` (which targets, from the config),
`sender` (the outbox senders) and `journal` (the alert journal)."""
