"""Shared test support: fixtures and helpers importable as ``support.*``."""
