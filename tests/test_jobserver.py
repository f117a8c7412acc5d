"""The job server (vitlib.jobserver): a delegated job is the same job as one in its own
process (directory, environment, arguments, streams, exit status, thread budget), runs in a
fork of the server, dies with the process that waits for it, and jobs run on their own
whenever no server of this host is reachable."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vitlib import jobserver

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the job server is Linux only")

SCRIPT = textwrap.dedent(
    """
    from vitlib.jobserver import delegate

    delegate(snakemake, __file__)

    import json, os, sys, time
    from threadpoolctl import threadpool_info

    import numpy

    blas = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
    with open(snakemake.out, "w") as f:
        json.dump(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "cwd": os.getcwd(),
                "var": os.environ.get("JOBSERVER_TEST_VAR"),
                "omp": os.environ.get("OMP_NUM_THREADS"),
                "blas": blas,
                "argv": sys.argv,
                "value": snakemake.value,
                "server": os.environ.get("VITLIB_JOB_SERVER"),
            },
            f,
        )
    print("hello from the job", flush=True)
    if snakemake.sleep:
        time.sleep(snakemake.sleep)
    if snakemake.fail:
        raise RuntimeError("the job failed on purpose")
    sys.exit(snakemake.code)
    """
)
# what Snakemake's script preamble does: a `snakemake` object, `__file__` the real script
RUNNER = textwrap.dedent(
    """
    import pickle, runpy, sys

    snakemake = pickle.loads(bytes.fromhex(sys.argv[2]))
    runpy.run_path(sys.argv[1], init_globals={"snakemake": snakemake}, run_name="__main__")
    """
)


@pytest.fixture
def files(tmp_path: Path) -> SimpleNamespace:
    (tmp_path / "job.py").write_text(SCRIPT)
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "work").mkdir()
    return SimpleNamespace(root=tmp_path, script=tmp_path / "job.py", runner=tmp_path / "runner.py")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> str:
    """A server of this test process, importing numpy only; its ``host:socket``."""
    monkeypatch.delenv(jobserver.ENV, raising=False)
    spec = jobserver.start(preload=("numpy", "threadpoolctl"))
    assert spec is not None
    path = Path(spec.partition(":")[2])
    deadline = time.time() + 60
    while not path.exists():
        assert time.time() < deadline, "the job server never came up"
        time.sleep(0.05)
    yield spec
    jobserver.stop()
    assert not path.parent.exists()


def _job(files: SimpleNamespace, spec: str | None, **kw: object) -> subprocess.Popen[str]:
    sm = SimpleNamespace(
        threads=kw.pop("threads", 1),
        out=str(files.root / "out.json"),
        value=42,
        sleep=kw.pop("sleep", 0),
        fail=kw.pop("fail", False),
        code=kw.pop("code", 0),
    )
    env = {k: v for k, v in os.environ.items() if k != jobserver.ENV}
    env["JOBSERVER_TEST_VAR"] = "from the job"
    if spec is not None:
        env[jobserver.ENV] = spec
    return subprocess.Popen(
        [sys.executable, str(files.runner), str(files.script), pickle.dumps(sm).hex(), "extra"],
        cwd=files.root / "work",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _server_pid(spec: str) -> int:
    assert jobserver._RUNNING is not None
    return jobserver._RUNNING.process.pid


@pytest.mark.parametrize("threads", [1, 2])
def test_a_delegated_job_runs_in_a_fork_of_the_server_as_itself(files, server, threads):
    proc = _job(files, server, threads=threads)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = json.loads((files.root / "out.json").read_text())
    assert got["ppid"] == _server_pid(server)  # forked by the server ...
    assert got["pid"] != proc.pid  # ... not the job's own process
    assert got["cwd"] == str(files.root / "work")
    assert got["var"] == "from the job"
    assert got["argv"][-1] == "extra"
    assert got["value"] == 42
    assert got["omp"] == str(threads) and got["blas"] == [threads]  # the job's thread budget
    assert got["server"] == "0"  # a job never delegates again
    assert "hello from the job" in out  # the job's own standard output


@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_job_on_its_own_gets_the_same_budget(files, threads):
    proc = _job(files, None, threads=threads)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = json.loads((files.root / "out.json").read_text())
    assert got["pid"] == proc.pid
    assert got["omp"] == str(threads) and got["blas"] == [threads]


@pytest.mark.parametrize("spec", ["0", "", "another-host:/nonexistent/socket"])
def test_without_a_reachable_server_the_job_runs_in_its_own_process(files, spec):
    if spec.startswith("another-host"):
        assert socket.gethostname() != "another-host"
    proc = _job(files, spec)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads((files.root / "out.json").read_text())["pid"] == proc.pid


def test_a_socket_that_is_gone_means_running_here(files, tmp_path):
    proc = _job(files, f"{socket.gethostname()}:{tmp_path / 'no-such-socket'}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads((files.root / "out.json").read_text())["pid"] == proc.pid


def test_exit_status_and_failures_come_back(files, server):
    proc = _job(files, server, code=3)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    proc = _job(files, server, fail=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "RuntimeError: the job failed on purpose" in err  # the traceback, on the job's stderr
    assert json.loads((files.root / "out.json").read_text())["ppid"] == _server_pid(server)


def _running_fork(files: SimpleNamespace, proc: subprocess.Popen[str]) -> int:
    """The pid the (sleeping) job reports once it runs."""
    out = files.root / "out.json"
    deadline = time.time() + 60
    while not out.exists() or not out.read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    return int(json.loads(out.read_text())["pid"])


def _gone(pid: int, what: str) -> None:
    deadline = time.time() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_killing_the_job_kills_its_fork(files, server):
    proc = _job(files, server, sleep=120)
    child = _running_fork(files, proc)
    assert child != proc.pid
    os.kill(child, 0)  # alive
    proc.send_signal(signal.SIGKILL)  # Snakemake cancelling the job
    proc.wait(timeout=10)
    _gone(child, "the fork outlived its job")
    # the server goes on serving
    proc = _job(files, server)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert json.loads((files.root / "out.json").read_text())["ppid"] == _server_pid(server)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(jobserver.ENV, "0")
    assert jobserver.start() is None
    jobserver.stop()  # nothing to stop


def test_start_up_counts_from_the_jobs_own_process(monkeypatch):
    from vitlib.logs import process_age

    monkeypatch.setenv(jobserver.STARTED_ENV, repr(time.time() - 2.5))
    age = process_age()
    assert age is not None and 2.5 <= age < 10.0


def test_a_job_never_outlives_its_server(files, server):
    proc = _job(files, server, sleep=120)
    child = _running_fork(files, proc)
    os.kill(_server_pid(server), signal.SIGKILL)  # the server killed -9
    _gone(child, "the fork outlived its server")
    proc.wait(timeout=10)
    assert proc.returncode != 0  # the job failed, and said so


def test_a_bad_or_vanished_request_leaves_the_server_serving(files, server):
    path = server.partition(":")[2]
    for payload in (b"", b"garbage that is no header", b"\x00" * 8):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.sendall(payload)
        c.close()
    proc = _job(files, server)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads((files.root / "out.json").read_text())["ppid"] == _server_pid(server)
