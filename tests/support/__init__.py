"""Helpers the test modules share: plain modules (no test module or conftest is imported as a library)."""
