"""Helpers that drive a real Prefect server from tests."""
