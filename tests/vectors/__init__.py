"""Shared test material for targets: pipeline vectors, a minimal P4Runtime client, handles."""
