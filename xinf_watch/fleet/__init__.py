"""Rule state shared by a fleet of instances through Redis (`state.shared`)."""
