"""Logging set-up for workflow scripts: everything (logging, warnings, stderr) to one file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the process
    sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
