"""A one-node SLURM cluster on localhost for tests (see ../shared/SLURM_LOCAL.md).

Everything lives in one temporary directory: slurm.conf, gres.conf, spool, logs and PID
files.  Clients find it through ``SLURM_CONF`` (nothing is written to /etc/slurm), and
:meth:`LocalSlurm.stop` kills exactly the daemons it started, by the PIDs they wrote, then
removes the directory — no SLURM config is left behind to slow later ``snakemake`` calls.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def available() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue"))


class LocalSlurm:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vitlib-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.pids: list[int] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.dir / "slurm.conf")}

    def _conf(self) -> None:
        d = self.dir
        for sub in ("spool", "state", "log"):
            (d / sub).mkdir()
        cpus = os.cpu_count() or 2
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
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=64000 Gres=gpu:fake:1 State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        (d / "gres.conf").write_text(f"NodeName={self.host} Name=gpu Type=fake File=/dev/null\n")

    def start(self) -> "LocalSlurm":
        self._conf()
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            pidfile = self.dir / "munged.pid"
            subprocess.run(["runuser", "-u", "munge", "--", "munged", "--pid-file",
                            str(pidfile)], check=True)
            shutil.copy(pidfile, self.dir / "munged.pid.copy")
            self.pids.append(int(pidfile.read_text().strip()))
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
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                 env=self.env).stdout
            if "idle" in out:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"local SLURM did not come up: {out!r}\n"
                           + (self.dir / "log" / "slurmctld.log").read_text()[-2000:])

    def stop(self) -> None:
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
        shutil.rmtree(self.dir, ignore_errors=True)
