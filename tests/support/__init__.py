"""Helpers shared by the engine tests (not tests themselves)."""
