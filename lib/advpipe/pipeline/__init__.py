"""Stages of the workflow: each reads dumps, calls the library, writes outputs. Scripts call these."""
