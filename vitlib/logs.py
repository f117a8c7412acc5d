"""Logging set-up for workflow scripts: everything (logging, warnings, stderr) to one file,
and the reason a job failed on the console too."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType


def log_to(path: str) -> None:
    """Send logging, warnings and stderr of this process to ``path``.  An uncaught exception
    is written there with its traceback and, as one line naming the error and the log, to
    the console's stderr, so a failed job says why without opening the log."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the process
    console = sys.__stderr__
    sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)

    def report(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        traceback.print_exception(kind, err, tb, file=stream)
        stream.flush()
        if console is not None:
            console.write(f"ERROR {kind.__name__}: {err}\n  (traceback: {path})\n")
            console.flush()

    sys.excepthook = report
