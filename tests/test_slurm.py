"""The tiny workflow through profiles/slurm on a real one-node SLURM cluster on localhost.

Selected with ``-m slurm``; runs wherever the SLURM daemons are installed (``.ci/run``
installs Debian's slurm-wlm and munge) and skips elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from slurm.cluster import LocalSlurm, available
from test_workflow import smk, tiny_config, write_config

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not available(), reason="SLURM daemons not installed (.ci/run installs them)"
    ),
]


def slurm_smk(workdir, cluster, *args):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--default-resources",
        "slurm_partition=test",
        "runtime=10",
        "mem_mb=1000",
        "cpus_per_task=1",
        # this one-node test cluster is small: every rule fits one CPU and 1 GB
        "--set-resources",
        "extract:cpus_per_task=1",
        "extract:mem_mb=1000",
        "extract:runtime=10",
        "table:mem_mb=1000",
        "table_gpu:mem_mb=1000",
        "--set-threads",
        "extract=1",
        "table=1",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=cluster.env, timeout=900)


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    c = LocalSlurm().start()
    pids = list(c.pids)
    yield c
    c.stop()
    from slurm.cluster import DEFAULT_CONF

    assert not c.dir.exists() and not DEFAULT_CONF.exists()  # no SLURM config left behind
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(pid, 0)


def small_config():
    cfg = tiny_config()
    cfg["analyses"] = {
        "attention_distance": {"datasets": ["toy"]},
        "features": {"datasets": ["toy"], "clustering_n_init": 2},
    }
    return cfg


def test_workflow_on_slurm_equals_local_run(tmp_path, cluster):
    write_config(tmp_path / "local", small_config())
    write_config(tmp_path / "slurm", small_config())
    smk(tmp_path / "local")
    t0 = time.time()
    p = slurm_smk(tmp_path / "slurm", cluster)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    took = time.time() - t0
    # jobs really went through SLURM (sbatch job ids in the log)
    assert "SLURM run ID" in p.stdout + p.stderr or "jobid" in (p.stdout + p.stderr).lower()
    for rel in (
        "tables/toy/attention_distance/tiny_a.csv",
        "tables/toy/cka.csv",
        "tables/toy/clustering/tiny_b.csv",
        "tables/toy/residual/tiny_a.csv",
    ):
        a = pd.read_csv(tmp_path / "local" / "results" / rel)
        b = pd.read_csv(tmp_path / "slurm" / "results" / rel)
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
        num = a.select_dtypes("number").columns
        np.testing.assert_allclose(
            a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-4, atol=1e-6, err_msg=rel
        )
    for ext in ("pdf", "png"):
        assert (tmp_path / "slurm/results/figures/toy" / f"attention_distance.{ext}").exists()
    print(f"slurm run took {took:.1f} s")


def test_failing_job_is_reported_as_failed(tmp_path, cluster):
    cfg = small_config()
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    cfg["custom_models"]["tiny_b"]["weights"] = {"path": str(bad), "format": "dino"}
    write_config(tmp_path / "wd", cfg)
    p = slurm_smk(tmp_path / "wd", cluster, "results/features/tiny_b/toy/center.complete.json")
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "Error in rule extract" in out and "tiny_b" in out
    assert not (tmp_path / "wd/results/features/tiny_b/toy/center.complete.json").exists()
