"""Logging set-up for workflow scripts: everything (logging, warnings, stderr) to one file,
and the reason a job failed on the console too."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): at a job's
    first line, what its interpreter, Snakemake's script preamble and the script's top-level
    imports cost (modules a job imports later, where it uses them, count as its work).

    A job run by the job server (:mod:`vitlib.jobserver`) is a fork that started later than
    the job's own process: its age counts from when that process started
    (``VITLIB_JOB_STARTED``, seconds since the epoch)."""
    started = os.environ.get("VITLIB_JOB_STARTED")
    if started:
        try:
            return max(0.0, time.time() - float(started))
        except ValueError:
            pass
    try:
        with open("/proc/self/stat") as f:
            # field 22 (starttime, clock ticks after boot); the name (field 2) may hold spaces
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return max(0.0, up - start / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def log_to(path: str) -> None:
    """Send logging, warnings and stderr of this process to ``path``.  An uncaught exception
    is written there with its traceback and, as one line naming the error and the log, to
    the console's stderr, so a failed job says why without opening the log.  The first line
    says how long the job took to start (:func:`process_age`)."""
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
    age = process_age()
    if age is not None:
        logging.getLogger("vitlib.job").info("start-up %.2f s (interpreter and imports)", age)


def finish() -> None:
    """End a job that succeeded, now: flush logging and the standard streams, then leave
    without the interpreter's teardown (``os._exit(0)``).

    Tearing down a process that imported torch and timm takes 0.8–1.5 s on a 2-core machine
    (freeing every module and the libraries' static state), a second per job that a workflow
    of hundreds of jobs pays for nothing: the outputs are already written and closed when a
    script calls this as its last line.  A job that fails never gets here and exits normally
    with its traceback.  ``VITLIB_NO_FAST_EXIT=1`` keeps the normal exit (profilers, coverage
    and other ``atexit`` users)."""
    age = process_age()
    if age is not None:
        logging.getLogger("vitlib.job").info("done after %.2f s", age)
    logging.shutdown()  # flushes and closes every handler
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):  # closed by the job
                pass
    if os.environ.get("VITLIB_NO_FAST_EXIT") != "1":
        os._exit(0)
