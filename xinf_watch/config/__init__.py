"""rules.yaml: loading, the settings' types and values, filters, errors with line numbers."""
