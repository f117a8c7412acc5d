"""A fork server for the workflow's local jobs: the heavy libraries imported once, each job a
fork of that process instead of a fresh interpreter.

Every Snakemake ``script:`` job is a new Python process that imports what it uses before it
does any work: torch and timm alone take 3–4 s on a 2-core machine, and the demo runs about
300 jobs of which most work for less than that.  The workflow starts one server per run
(``onstart`` in the Snakefile, :func:`start`): a process that imports :data:`PRELOAD` and then
waits on a Unix socket.  A job's script calls :func:`delegate` as its first line; when a
server of this run is up on this host, the script's process hands its ``snakemake`` object,
working directory, environment and standard streams to the server, which forks a child that
runs the script (the child imports vitlib itself, so edited library code is always the code
that runs), and the job's process waits for the child's exit status and exits with it.
Without a server (a cluster job on another node, a conda environment, ``VITLIB_JOB_SERVER=0``,
any failure to reach it) the script simply runs in its own process, as before.

What a forked job shares with a fresh one: its working directory, environment, arguments,
``sys.path``, standard streams, the job's thread budget (``snakemake.threads``, applied the
same way in both, :func:`delegate`) and fresh seeds of Python's and numpy's global random
generators.  Killing the job's process (Snakemake cancelling it, Ctrl-C) kills the child and
its process group.  The server accepts connections only from its own user (``SO_PEERCRED``)
on a socket in a private (0700) directory: what it receives is a pickle, with the trust of
Snakemake's own script preamble.

Limits: Linux only (``fork``, ``SO_PEERCRED``); the server's memory (~0.9 GB with torch) is
shared copy-on-write with the children; Snakemake's ``benchmark:`` files record the waiting
process's memory and CPU, not the child's (the wall time is right).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ENV", "PRELOAD", "THREAD_VARS", "delegate", "serve", "start", "stop"]

#: ``host:socket`` of the run's server, set by :func:`start` for the jobs; ``0`` turns it off.
ENV = "VITLIB_JOB_SERVER"
#: Set in a job (delegated or not): seconds since the epoch when its process started.
STARTED_ENV = "VITLIB_JOB_STARTED"
#: What the server imports once: the third-party libraries the workflow's jobs use (never
#: vitlib itself).  A module that is not installed is skipped.
PRELOAD: tuple[str, ...] = (
    "numpy",
    "scipy.linalg",
    "scipy.ndimage",
    "scipy.stats",
    "pandas",
    "zarr",
    "PIL.Image",
    "matplotlib.pyplot",
    "sklearn.linear_model",
    "sklearn.metrics",
    "faiss",
    "torch",
    "torchvision",
    "timm",
    "open_clip",
    "pycocotools.mask",
    "snakemake.script",
)
#: Environment variables that carry a job's thread budget to the numeric libraries.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_HEADER = struct.Struct("!Q")  # length of the JSON request that follows
_STATUS = struct.Struct("!i")  # the child's exit code (128 + signal when killed)
_ACCEPTED = b"A"
_CHILD = False  # True in a forked job: delegate() then does nothing


# --------------------------------------------------------------------------- the job side


def delegate(snakemake: Any, script: str) -> None:
    """Run this job's script in a fork of the run's server, if one is up on this host, and
    exit with its status; otherwise return at once (the script goes on in this process).

    Call it as the first statement of a workflow script, before any heavy import:
    ``delegate(snakemake, __file__)``.  Either way the job's thread budget
    (``snakemake.threads``) is put into :data:`THREAD_VARS` first, so that a delegated job
    and one that runs here use the same number of threads.
    """
    if _CHILD:
        return
    threads = str(max(1, int(getattr(snakemake, "threads", 1) or 1)))
    for var in THREAD_VARS:
        os.environ[var] = threads
    os.environ.pop(STARTED_ENV, None)  # this process's own start, never an inherited one
    os.environ[STARTED_ENV] = repr(_process_start())
    spec = os.environ.get(ENV, "")
    host, _, path = spec.partition(":")
    if not path or host != socket.gethostname() or sys.platform != "linux":
        return
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        conn.connect(path)
        request = {
            "script": os.path.abspath(script),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "argv": list(sys.argv),
            "path": list(sys.path),
            "executable": os.path.realpath(sys.executable),
            "threads": int(threads),
            "snakemake": pickle.dumps(snakemake, protocol=4).hex(),
        }
        body = json.dumps(request).encode()
        socket.send_fds(conn, [_HEADER.pack(len(body))], [0, 1, 2])
        conn.sendall(body)
        if _recv_exact(conn, 1) != _ACCEPTED:
            conn.close()
            return  # declined (another interpreter, ...): run here
    except OSError:
        return  # no server (any more): run here
    conn.settimeout(None)
    try:
        reply = _recv_exact(conn, _STATUS.size)
    except OSError:
        reply = b""
    if len(reply) != _STATUS.size:
        sys.stderr.write(f"ERROR the job server at {path} went away while running {script}\n")
        sys.stderr.flush()
        os._exit(1)
    os._exit(_STATUS.unpack(reply)[0])


def _process_start() -> float:
    """Seconds since the epoch when this process started (now, where /proc is missing)."""
    from vitlib.logs import process_age

    age = process_age()
    return time.time() - (age or 0.0)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- the server


@dataclass
class _Job:
    conn: socket.socket
    pid: int
    script: str


@dataclass
class _Server:
    listener: socket.socket
    parent: int
    jobs: dict[int, _Job] = field(default_factory=dict)  # by child pid
    sel: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    stopping: bool = False


def serve(path: str, parent: int, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, listen on the Unix socket ``path`` and fork a child per job until
    the process ``parent`` (the Snakemake run) is gone or SIGTERM arrives; children still
    running then are waited for (or killed, on SIGTERM)."""
    for name in preload:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    os.chmod(path + ".tmp", 0o600)
    listener.listen(64)
    os.rename(path + ".tmp", path)  # appears only when ready: earlier jobs run on their own
    srv = _Server(listener, parent)
    srv.sel.register(listener, selectors.EVENT_READ)

    def on_term(signum: int, frame: object) -> None:
        srv.stopping = True
        for job in srv.jobs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, on_term)
    while True:
        for key, _ in srv.sel.select(timeout=0.2):
            if key.fileobj is listener:
                _accept(srv)
            else:  # a waiting job's connection: readable only when its process went away
                job = key.data
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, signal.SIGKILL)
        _reap(srv)
        if os.getppid() != parent:
            srv.stopping = True
        if srv.stopping and not srv.jobs:
            break
    listener.close()
    with contextlib.suppress(OSError):
        os.unlink(path)


def _accept(srv: _Server) -> None:
    conn, _ = srv.listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(10.0)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        msg, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if uid != os.getuid() or len(msg) != _HEADER.size or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        (size,) = _HEADER.unpack(msg)
        request = json.loads(_recv_exact(conn, size))
        if srv.stopping or request.get("executable") != os.path.realpath(sys.executable):
            raise ValueError("declined: the job runs on its own")
        conn.sendall(_ACCEPTED)
    except (OSError, ValueError):  # a bad request, a declined one, or its job already gone
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    server = os.getpid()
    pid = os.fork()
    if pid == 0:  # the job
        try:
            srv.listener.close()
            srv.sel.close()
            for job in srv.jobs.values():
                job.conn.close()
            conn.close()
            _run_child(request, fds, server)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    job = _Job(conn, pid, request["script"])
    srv.jobs[pid] = job
    srv.sel.register(conn, selectors.EVENT_READ, job)


def _reap(srv: _Server) -> None:
    while srv.jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job = srv.jobs.pop(pid, None)
        if job is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        srv.sel.unregister(job.conn)
        with contextlib.suppress(OSError):
            job.conn.sendall(_STATUS.pack(128 - code if code < 0 else code))
        job.conn.close()


def _run_child(request: dict[str, Any], fds: list[int], server: int) -> None:
    """In the forked child: become the job (streams, directory, environment, threads,
    seeds) and run its script; never returns."""
    global _CHILD
    _CHILD = True
    os.setpgid(0, 0)
    _die_with_parent(server)
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[ENV] = "0"  # never delegate again from this job or its subprocesses
    sys.argv[:] = request["argv"]
    sys.path[:] = request["path"]
    _limit_threads(int(request["threads"]))
    _reseed()
    code = 0
    try:
        import runpy

        snakemake = pickle.loads(bytes.fromhex(request["snakemake"]))
        runpy.run_path(
            request["script"], init_globals={"snakemake": snakemake}, run_name="__main__"
        )
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    except BaseException:
        code = 1
        try:
            # the job's own hook (vitlib.logs.log_to) or the default
            sys.excepthook(*sys.exc_info())
        except BaseException:
            traceback.print_exc()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    os._exit(code)


def _die_with_parent(server: int) -> None:
    """SIGKILL this job if the server dies (Linux ``PR_SET_PDEATHSIG``): a job never outlives
    the server that would kill it when its waiting process goes."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != server:  # the server died before the line above
        os._exit(1)


def _limit_threads(n: int) -> None:
    """What :data:`THREAD_VARS` do for a fresh process, for the libraries already loaded."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)


def _reseed() -> None:
    """Fresh OS-entropy seeds for the global generators a fresh interpreter would seed."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


# --------------------------------------------------------------------------- the run's side


@dataclass
class _Handle:
    process: subprocess.Popen[bytes]
    directory: Path


_RUNNING: _Handle | None = None


def start(preload: tuple[str, ...] = PRELOAD) -> str | None:
    """Start the run's server (it becomes ready in the background, after importing
    ``preload``) and point this process's future jobs at it (:data:`ENV`); return
    ``host:socket``, or None where it is off (``VITLIB_JOB_SERVER=0``) or unavailable (not
    Linux)."""
    global _RUNNING
    if os.environ.get(ENV) == "0" or sys.platform != "linux" or _RUNNING is not None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="vitlib-jobs-"))  # 0700
    path = str(directory / "socket")
    env = dict(os.environ, MPLBACKEND=os.environ.get("MPLBACKEND", "Agg"))
    env.pop(ENV, None)
    # its own process group (no terminal Ctrl-C: the jobs' processes get it and their forks
    # are killed), but Snakemake's session: with the kernel's autogroup scheduling a new
    # session would share the CPU as a group apart from the run
    group: dict[str, Any] = (
        {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    )
    with open(directory / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vitlib.jobserver", path, str(os.getpid()), ",".join(preload)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            **group,
        )
    _RUNNING = _Handle(process, directory)
    spec = f"{socket.gethostname()}:{path}"
    os.environ[ENV] = spec
    return spec


def stop() -> None:
    """Stop the server :func:`start` started (its jobs have ended: the run is over)."""
    global _RUNNING
    handle, _RUNNING = _RUNNING, None
    if handle is None:
        return
    os.environ.pop(ENV, None)
    handle.process.terminate()
    try:
        handle.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        handle.process.kill()
        handle.process.wait()
    shutil.rmtree(handle.directory, ignore_errors=True)


if __name__ == "__main__":  # `python -m vitlib.jobserver`: serve from the importable module,
    # whose _CHILD flag the jobs' own `from vitlib.jobserver import delegate` sees
    from vitlib.jobserver import serve as _serve

    _serve(sys.argv[1], int(sys.argv[2]), tuple(filter(None, sys.argv[3].split(","))))
