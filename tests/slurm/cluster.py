"""A one-node SLURM cluster on localhost for tests (see ../shared/SLURM_LOCAL.md).

Everything lives in one temporary directory: slurm.conf, gres.conf, spool, logs and PID
files.  Clients find it through ``SLURM_CONF`` and, because snakemake-executor-plugin-slurm
(2.8) deletes every ``SLURM_*`` variable inside a job before it calls ``srun``, through a
symbolic link at the default path ``/etc/slurm/slurm.conf`` as well (refused if a real config
is there).  :meth:`LocalSlurm.stop` kills exactly the daemons it started, by their PIDs, and
removes the link and the directory — no SLURM config is left behind to slow later
``snakemake`` calls.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


def available() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue"))


class LocalSlurm:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vitlib-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.pids: list[int] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.dir / "slurm.conf")}
        self.linked = False

    def _conf(self) -> None:
        d = self.dir
        for sub in ("spool", "state", "log"):
            (d / sub).mkdir()
        cpus = os.cpu_count() or 2
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20) - 512
        (d / "slurm.conf").write_text(f"""
ClusterName=vitlibtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
ReturnToService=2
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:fake:1 State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        (d / "gres.conf").write_text(f"NodeName={self.host} Name=gpu Type=fake File=/dev/null\n")
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            raise RuntimeError(f"{DEFAULT_CONF} exists: refusing to run a test cluster beside it")
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(d / "slurm.conf")
        self.linked = True

    def start(self) -> LocalSlurm:
        """Start the daemons; they are stopped at interpreter exit and on SIGTERM too."""
        atexit.register(self.stop)
        self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalSlurm:
        self._conf()
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
            pid = subprocess.run(
                ["pgrep", "-x", "-n", "munged"], capture_output=True, text=True
            ).stdout.strip()
            self.pids.append(int(pid))
        conf = str(self.dir / "slurm.conf")
        subprocess.run(["slurmctld", "-f", conf], check=True, env=self.env)
        subprocess.run(["slurmd", "-f", conf], check=True, env=self.env)
        for name in ("slurmctld.pid", "slurmd.pid"):
            p = self.dir / name
            for _ in range(100):
                if p.exists() and p.read_text().strip():
                    break
                time.sleep(0.1)
            self.pids.append(int(p.read_text().strip()))
        for _ in range(100):  # wait until the node takes jobs
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env
            ).stdout
            if "idle" in out:
                return self
            time.sleep(0.2)
        log = (self.dir / "log" / "slurmctld.log").read_text()
        raise RuntimeError(f"local SLURM did not come up: {out!r}\n" + log[-1500:])

    def _on_term(self, signum, frame):  # noqa: ANN001, ANN202
        raise KeyboardInterrupt(f"signal {signum}: stopping the local SLURM cluster")

    def stop(self) -> None:
        if getattr(self, "_old_term", None) is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for pid in self.pids:
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pids = []
        if self.linked and DEFAULT_CONF.is_symlink():
            DEFAULT_CONF.unlink()
        self.linked = False
        shutil.rmtree(self.dir, ignore_errors=True)
