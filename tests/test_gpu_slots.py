"""GPU slots (vitlib.gpu_slots) without GPUs: the devices are ids handed to CUDA_VISIBLE_DEVICES,
so processes holding slots among ["0", "1"] show what two GPU jobs would be given."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitlib.gpu_slots import (
    GpuSlotTimeout,
    gpu_job,
    gpu_slot,
    parse_visible,
    slot_devices,
    visible_devices,
)

# Holds a slot among ["0", "1"], prints "<device> <CUDA_VISIBLE_DEVICES>" once it has one,
# and keeps it until the file argv[2] exists.
HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from vitlib.gpu_slots import gpu_slot

    release = Path(sys.argv[2])
    with gpu_slot(["0", "1"], sys.argv[1], timeout=30, poll=0.02) as dev:
        print(dev, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        while not release.exists():
            time.sleep(0.02)
    """
)


class Holder:
    def __init__(self, lock_dir: Path, name: str):
        self.release = lock_dir.parent / f"release-{name}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock_dir), str(self.release)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def device(self, wait: float = 15.0) -> str | None:
        """The device the holder got (checking that it is its CUDA_VISIBLE_DEVICES), or None
        when it has none after ``wait`` seconds."""
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not ready:
            return None
        dev, visible = self.proc.stdout.readline().split()
        assert visible == dev
        return dev

    def done(self) -> None:
        self.release.touch()
        assert self.proc.wait(15) == 0


@pytest.fixture()
def holders(tmp_path):
    started: list[Holder] = []

    def start(name: str) -> Holder:
        started.append(Holder(tmp_path / "slots", name))
        return started[-1]

    yield start
    for h in started:
        if h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait()


def test_two_jobs_get_different_devices_and_a_third_waits(holders):
    a, b = holders("a"), holders("b")
    devs = {"a": a.device(), "b": b.device()}
    assert set(devs.values()) == {"0", "1"}
    c = holders("c")
    assert c.device(wait=1.0) is None  # both devices held: it waits
    a.done()
    assert c.device() == devs["a"]  # until a releases its device
    b.done()
    c.done()


def test_a_killed_holder_frees_its_slot(holders, tmp_path):
    a, b = holders("a"), holders("b")
    devs = {"a": a.device(), "b": b.device()}
    assert set(devs.values()) == {"0", "1"}
    with pytest.raises(GpuSlotTimeout, match=str(tmp_path / "slots")):
        with gpu_slot(["0", "1"], tmp_path / "slots", timeout=0.2, poll=0.05):
            pass
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    c = holders("c")
    assert c.device() == devs["a"]
    b.done()
    c.done()


def test_slot_sets_and_restores_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with gpu_slot(["0", "1"], tmp_path) as dev:
        assert dev == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        with gpu_slot(["0", "1"], tmp_path) as other:  # the same process, a second job
            assert other == "1" and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with gpu_slot(["0", "1"], tmp_path) as dev:  # released on exit
        assert dev == "0"


def test_no_device_or_one_device_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with gpu_slot([], tmp_path / "none") as dev:
        assert dev is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    with gpu_slot(["3"], tmp_path / "one") as dev:
        assert dev == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "none").exists() and not (tmp_path / "one").exists()


def test_cpu_and_auto_jobs_are_untouched(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for device in ("cpu", "auto", "cuda:1"):
        with gpu_job(device, ["0", "1"], tmp_path) as dev:
            assert dev is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    with gpu_job("cuda", ["0", "1"], tmp_path, enabled=False) as dev:
        assert dev is None
    assert not (tmp_path / ".gpu_slots").exists()
    with gpu_job("cuda", ["0", "1"], tmp_path) as dev:
        assert dev == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert (tmp_path / ".gpu_slots").is_dir()


def test_visible_devices(tmp_path, monkeypatch):
    assert parse_visible("0,1") == ["0", "1"]
    assert parse_visible("GPU-8f1a-22,1") == ["GPU-8f1a-22", "1"]
    assert parse_visible("-1") == parse_visible("") == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_devices({}, nvidia_smi=str(tmp_path / "absent")) == []
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
        "echo '  MIG 1g.10gb Device 0: (UUID: MIG-x)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n"
    )
    smi.chmod(0o755)
    assert visible_devices({}, nvidia_smi=str(smi)) == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6")
    assert slot_devices("cuda", None) == ["5", "6"]
    assert slot_devices("cuda", [0, 1]) == ["0", "1"]
    assert slot_devices("auto", None) == slot_devices("cpu", None) == []


# Two GPU jobs (resources: gpu=1) under --resources gpu=2 --cores 2, each entering its slot the
# way workflow_scripts/ do and waiting inside it until the other is inside its own: they run
# at the same time and must have been given different devices.
SNAKEFILE = """
rule all:
    input:
        expand("out/{i}.txt", i=range(2)),


rule gpu_job:
    output:
        "out/{i}.txt",
    resources:
        gpu=1,
    script:
        "job.py"
"""

JOB = """
import os, time
from pathlib import Path
from vitlib.gpu_slots import gpu_job

cfg = snakemake.config["extract"]
with gpu_job(cfg["device"], cfg["gpus"], snakemake.config["results"]) as dev:
    inside = Path("inside")
    inside.mkdir(exist_ok=True)
    (inside / snakemake.wildcards.i).touch()
    start = time.time()
    while len(list(inside.iterdir())) < 2:  # the other job is inside its slot too
        assert time.time() - start < 20, "the two GPU jobs did not run at the same time"
        time.sleep(0.05)
    Path(snakemake.output[0]).write_text(f"{dev} {os.environ['CUDA_VISIBLE_DEVICES']}\\n")
"""


def test_concurrent_workflow_jobs_get_different_devices(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "job.py").write_text(JOB)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=2"]
        + ["--config", "results=res", "extract={device: cuda, gpus: ['0', '1']}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    seen = [(tmp_path / "out" / f"{i}.txt").read_text().split() for i in range(2)]
    assert all(dev == visible for dev, visible in seen)
    assert sorted(dev for dev, _ in seen) == ["0", "1"]
    assert (tmp_path / "res" / ".gpu_slots").is_dir()
