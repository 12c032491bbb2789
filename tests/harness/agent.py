"""Fixtures: agent (filled in by its room)."""
