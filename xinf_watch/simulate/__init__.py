"""The traffic simulator (`xinf-watch simulate`, `demo`): a week of traffic with incidents, scored."""
