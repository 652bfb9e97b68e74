"""Subcommands beyond validate: plan, render, run, status (filled in as they are built)."""

from __future__ import annotations


def register(sub, add_common) -> None:
    return None
