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
