"""Fixtures: moto (filled in by its room)."""
