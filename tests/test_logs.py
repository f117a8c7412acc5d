"""A failed workflow job says why on the console, not only in its log."""

from __future__ import annotations

import subprocess
import sys


def test_uncaught_error_reaches_the_console_and_the_log(tmp_path):
    log = tmp_path / "logs" / "job.log"
    code = (
        "from vitlib.logs import log_to\n"
        "from vitlib.data.manifest import DataError\n"
        f"log_to({str(log)!r})\n"
        "import logging; logging.getLogger('x').info('working')\n"
        "raise DataError('cannot read image /data/x.png: truncated')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 1
    assert "ERROR DataError: cannot read image /data/x.png: truncated" in p.stderr
    assert str(log) in p.stderr
    text = log.read_text()
    assert "working" in text and "Traceback" in text and "x.png" in text


def test_finish_leaves_at_once_with_everything_written(tmp_path):
    """``finish()`` skips the interpreter's teardown (os._exit) but only after the log, the
    standard streams and the logging handlers are flushed; atexit handlers do not run (the
    marker file proves the teardown was skipped), the exit status is 0."""
    log = tmp_path / "job.log"
    skipped = tmp_path / "atexit_ran"
    code = (
        "import atexit, logging, sys\n"
        f"atexit.register(lambda: open({str(skipped)!r}, 'w').close())\n"
        "from vitlib.logs import finish, log_to\n"
        f"log_to({str(log)!r})\n"
        "logging.getLogger('x').info('last words')\n"
        "sys.stderr.write('unterminated line')\n"
        "print('to stdout', end='')\n"
        "finish()\n"
        "raise SystemExit('not reached')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "to stdout"
    text = log.read_text()
    assert "last words" in text and "unterminated line" in text
    first, last = text.splitlines()[0], text.splitlines()[-1]
    assert "start-up" in first and "(interpreter and imports)" in first  # process_age
    assert "done after" in last and float(last.split("done after ")[1].split()[0]) < 60
    assert not skipped.exists()
    # the normal exit when asked for (profilers, coverage): atexit runs
    env = {**__import__("os").environ, "VITLIB_NO_FAST_EXIT": "1"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "not reached" in log.read_text()
    assert skipped.exists()
