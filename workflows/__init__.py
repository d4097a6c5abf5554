"""Workflows: deterministic, no I/O. Activities never import from here."""
