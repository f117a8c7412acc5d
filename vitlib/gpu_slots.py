"""One GPU per job: a slot allocator for GPU jobs that run side by side on one machine.

Snakemake's ``gpu`` resource limits how many GPU jobs run at once, but gives none of them a
device: without help every job uses ``cuda:0``.  :func:`gpu_slot` gives the calling process
a device of its own for as long as it holds the slot: it takes an exclusive ``flock`` on
``<lock_dir>/<host>/gpu<id>.lock`` for the first free device (non-blocking tries over all
devices, then polling until ``timeout``) and sets ``CUDA_VISIBLE_DEVICES`` to that one
device, so the job's ``cuda`` (``cuda:0``) is the device it was given.  The kernel drops a
``flock`` when its process dies, so a killed job never leaves a stale slot behind.

``CUDA_VISIBLE_DEVICES`` is read once, when CUDA initialises in the process: enter the slot
before anything touches the GPU (importing torch is fine, ``torch.cuda.*`` calls are not).

:func:`gpu_job` is what the workflow scripts call: it decides from the device setting
(``extract.device``) and the device list (``extract.gpus``) whether the job needs a slot.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: The slot locks' directory under the workflow's results directory.
LOCK_SUBDIR = ".gpu_slots"
#: How long a job waits for a free device before giving up (seconds).  Only reached when
#: more GPU jobs run than there are devices (``--resources gpu`` above ``extract.gpus``),
#: when each waits for another to finish; generous so that a long job ahead is not fatal.
DEFAULT_TIMEOUT = 12 * 3600.0
#: How often a waiting job logs that it is still waiting (seconds).
_REMIND_EVERY = 600.0

_VALID_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-.+)$")


class GpuSlotTimeout(TimeoutError):
    """No device became free within the timeout."""


def parse_visible(value: str) -> list[str]:
    """The device ids of a ``CUDA_VISIBLE_DEVICES`` value, read as CUDA reads it: up to the
    first entry that is not a device (an index or a ``GPU-``/``MIG-`` UUID).

    >>> parse_visible("0,1")
    ['0', '1']
    >>> parse_visible("2, 3,-1,4")
    ['2', '3']
    >>> parse_visible("")
    []
    """
    ids: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not _VALID_ID.match(entry):
            break
        ids.append(entry)
    return ids


def visible_devices(
    env: Mapping[str, str] | None = None, nvidia_smi: str = "nvidia-smi"
) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else one index per
    GPU that ``nvidia-smi -L`` lists, else none (no driver, no GPU)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_visible(env["CUDA_VISIBLE_DEVICES"])
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("nvidia-smi -L failed (%s): no GPUs assumed", e)
        return []
    n = sum(1 for line in out.splitlines() if re.match(r"^GPU \d+:", line))
    return [str(i) for i in range(n)]


def slot_devices(
    device: str, gpus: Sequence[str | int] | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The devices a job with device setting ``device`` shares out (``[]``: no slot).

    Only ``cuda`` takes a slot: ``cpu`` and ``auto`` are CPU jobs in the workflow (they hold
    no ``gpu`` resource) and ``cuda:N`` pins a device by hand.  ``gpus`` is the config's
    ``extract.gpus``; ``None`` means every visible device (:func:`visible_devices`).

    >>> slot_devices("cuda", [0, "1"])
    ['0', '1']
    >>> slot_devices("cpu", [0, 1]), slot_devices("cuda:1", [0, 1])
    ([], [])
    """
    if device != "cuda":
        return []
    if gpus is not None:
        return [str(g) for g in gpus]
    return visible_devices(env)


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    return bool(cuda is not None and cuda.is_initialized())


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None when it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)  # who holds it, for a person looking at the lock directory
    os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    return fd


def _lock_name(device: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


@contextmanager
def gpu_slot(
    devices: Sequence[str | int],
    lock_dir: str | os.PathLike[str],
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    poll: float = 1.0,
) -> Iterator[str | None]:
    """Hold one of ``devices`` for the duration of the ``with`` block and yield its id.

    Inside the block ``CUDA_VISIBLE_DEVICES`` is that one device (restored on exit).  With
    no devices it yields None and changes nothing (CPU jobs, machines without GPUs); with one
    there is nothing to share out: no lock is taken (a job on a single-GPU node of a
    cluster sees its own GPU as device 0, as does every other job on that node).

    The locks live in ``<lock_dir>/<host>/`` so that a lock directory on a shared file
    system never makes jobs on different machines wait for each other.  Raises
    :class:`GpuSlotTimeout` when no device is free after ``timeout`` seconds (None: wait for
    ever), and RuntimeError when CUDA was initialised in this process before the slot (the
    job would not see the device it is given).
    """
    ids = [str(d) for d in devices]
    if not ids:
        log.debug("GPU slot: no devices listed, nothing to share out")
        yield None
        return
    if _cuda_initialised():
        raise RuntimeError(
            "GPU slot requested after CUDA was initialised in this process: its"
            " CUDA_VISIBLE_DEVICES can no longer change; enter gpu_slot before any torch.cuda call"
        )
    fd: int | None = None
    if len(ids) == 1:
        device = ids[0]
        log.info("GPU slot: the only device, %s (no lock needed)", device)
    else:
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"
        where = Path(lock_dir, host)
        where.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        remind = start
        while True:
            for device in ids:
                fd = _try_lock(where / _lock_name(device))
                if fd is not None:
                    break
            if fd is not None:
                break
            now = time.monotonic()
            if timeout is not None and now - start >= timeout:
                raise GpuSlotTimeout(
                    f"no free GPU among {', '.join(ids)} after {now - start:.0f} s: every one"
                    f" is held by another job (locks in {where}). Is --resources gpu=N larger"
                    " than the number of devices (extract.gpus), or is another run using the"
                    " same results directory?"
                )
            if now >= remind:
                log.warning(
                    "GPU slot: all %d devices (%s) are busy, waiting for one (locks in %s)",
                    len(ids),
                    ", ".join(ids),
                    where,
                )
                remind = now + _REMIND_EVERY
            time.sleep(poll)
        log.info(
            "GPU slot: device %s of %s after %.1f s (lock %s)",
            device,
            ", ".join(ids),
            time.monotonic() - start,
            where / _lock_name(device),
        )
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    try:
        yield device
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@contextmanager
def gpu_job(
    device: str,
    gpus: Sequence[str | int] | None,
    results: str | os.PathLike[str],
    *,
    enabled: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Iterator[str | None]:
    """The slot of one workflow job: a device of ``gpus`` (all visible ones when None) when
    the job is a GPU job (``enabled`` and ``device`` is ``cuda``), locks under
    ``<results>/.gpu_slots``.  Yields the device id, or None for a job that takes no slot."""
    devices = slot_devices(device, gpus) if enabled else []
    if enabled and device.startswith("cuda:"):
        log.info("device %s pinned by the config: no GPU slot", device)
    elif enabled and device == "cuda" and not devices:
        log.warning(
            "device cuda but no GPU ids found (CUDA_VISIBLE_DEVICES unset, no nvidia-smi):"
            " no GPU slot, the job uses cuda:0; list the devices in extract.gpus"
        )
    if not devices:
        yield None
        return
    with gpu_slot(devices, Path(results, LOCK_SUBDIR), timeout=timeout) as dev:
        yield dev
