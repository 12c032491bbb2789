"""Fixtures: mosquitto (filled in by its room)."""
