"""What every result file of benchmarks/ppo_quality/ opens with: its schema (schema.md), date, machine,
command and settings."""

from __future__ import annotations

import os
import shlex
import sys
import time

import torch

SCHEMA = "instructrl.ppo_quality/1"


def machine() -> str:
    """The machine this process runs on; stages trained elsewhere are named in ``trained_elsewhere`` by hand."""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else " (no GPU)"
    return f"{os.cpu_count()}-core CPU{gpu}"


def header(settings: dict) -> dict:
    return {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": shlex.join(["python", *sys.argv]),
        "settings": settings,
    }
