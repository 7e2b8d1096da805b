"""The key registry (what is known about each API key) and where it comes from."""
