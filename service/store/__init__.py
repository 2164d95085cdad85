"""Durable storage: tables, migrations and the transactions that use them (no Flask, no HTTP)."""
