"""Store layout, completion marker and resumption after a kill at any point."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from vitlib.extract import run_extraction
from vitlib.store import IncompleteStoreError, StoreWriter, is_complete, open_store, progress_path


class Killed(Exception):
    pass


def arrays(path):
    g = zarr.open_group(str(path), mode="r")
    out = {}

    def walk(grp, prefix=""):
        for k, a in grp.arrays():
            out[prefix + k] = np.asarray(a[...])
        for k, sub in grp.groups():
            walk(sub, prefix + k + "/")

    walk(g)
    return out


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture()
def reference(tmp_path, tiny_spec, tiny_manifest):
    ref = tmp_path / "ref.zarr"
    s = run_extraction(tiny_spec, tiny_manifest, "center", ref, batch_size=8, progress=False)
    assert s["batches"] == 4 and s["n_items"] == 32
    return arrays(ref)


def test_layout_and_values(tmp_path, tiny_spec, tiny_manifest, reference):
    g = open_store(tmp_path / "ref.zarr")
    meta = g.attrs["vitlib"]
    assert meta["n_items"] == 32 and meta["batch_size"] == 8 and meta["n_chunks"] == 8
    assert g["feat/block_cls"].shape == (32, 3, 32)
    assert g["feat/block_cls"].chunks == (8, 1, 32)  # one layer of a batch per chunk
    # one shard (file) holds whole batches × every layer: here the whole tiny store
    assert meta["shard_batches"] == 4  # capped at the store's batches
    assert g["feat/block_cls"].shards == (32, 3, 32)
    assert sorted(os.listdir(tmp_path / "ref.zarr" / "feat" / "block_cls" / "c")) == ["0"]
    assert g["attn/cls_row"].shape == (32, 3, 2, 16)
    assert g["attn/distance"].shape == (32, 3, 2)
    assert g["gram/block_all"].shape == (8, 3, 4, 4)
    # Grams: one chunk per commit with every layer (read whole by CKA jobs)
    assert g["gram/block_all"].chunks == (8, 3, 4, 4) and g["gram/block_all"].shards is None
    assert int(g["sums/n_images"][()]) == 32
    np.testing.assert_array_equal(g["labels"][:], tiny_manifest.labels)
    # nothing left at its fill value: every row was written
    assert np.all(np.abs(reference["feat/block_cls"]).sum(-1) > 0)
    assert np.all(reference["attn/distance"] > 0)
    # attention rows of one head over spatial keys sum to at most 1
    assert np.all(reference["attn/cls_row"].astype(np.float32).sum(-1) <= 1.001)


@pytest.mark.parametrize("kill_after", [0, 2])
def test_resume_after_exception_equals_uninterrupted(
    tmp_path, tiny_spec, tiny_manifest, reference, kill_after
):
    out = tmp_path / "run.zarr"

    def boom(b):
        if b == kill_after:
            raise Killed

    with pytest.raises(Killed):
        run_extraction(
            tiny_spec,
            tiny_manifest,
            "center",
            out,
            batch_size=8,
            progress=False,
            shard_mb=0,
            on_batch=boom,
        )
    assert not is_complete(out)
    with pytest.raises(IncompleteStoreError, match="not a complete vitlib store"):
        open_store(out)
    s = run_extraction(
        tiny_spec, tiny_manifest, "center", out, batch_size=8, progress=False, shard_mb=0
    )
    assert s["resumed_from_batch"] == kill_after + 1
    assert_same_arrays(arrays(out), reference)


def test_kill_between_rows_and_commit_redoes_the_batch(
    tmp_path, tiny_spec, tiny_manifest, reference, monkeypatch
):
    """Rows of batch 2 written, progress not yet committed: batch 2 is redone, sums not doubled."""
    out = tmp_path / "run.zarr"
    real = StoreWriter.write_batch

    def write_then_die(self, batch, per_image, per_chunk, sums):
        if batch == 2:
            for name, arr in per_image.items():  # the rows land ...
                self.group[name][16:24] = arr
            raise Killed  # ... the commit does not
        return real(self, batch, per_image, per_chunk, sums)

    monkeypatch.setattr(StoreWriter, "write_batch", write_then_die)
    with pytest.raises(Killed):
        run_extraction(
            tiny_spec, tiny_manifest, "center", out, batch_size=8, progress=False, shard_mb=0
        )
    monkeypatch.setattr(StoreWriter, "write_batch", real)
    s = run_extraction(
        tiny_spec, tiny_manifest, "center", out, batch_size=8, progress=False, shard_mb=0
    )
    assert s["resumed_from_batch"] == 2
    assert_same_arrays(arrays(out), reference)


def test_sigkill_at_a_random_moment_then_resume(tmp_path, tiny_spec, tiny_manifest, reference):
    """A real SIGKILL of a separate extraction process, then a resumed run."""
    out = tmp_path / "killed.zarr"
    marker = tmp_path / "first_batch_committed"
    man = tmp_path / "manifest.json"
    tiny_manifest.save(man)
    code = textwrap.dedent(f"""
        import time
        from vitlib.data.manifest import Manifest
        from vitlib.models import spec_from_config
        from conftest import TINY_ARCH
        spec = spec_from_config("tiny", TINY_ARCH)
        from vitlib.extract import run_extraction
        def committed(b):
            open({str(marker)!r}, "a").close()
            time.sleep(0.4)
        run_extraction(spec, Manifest.load({str(man)!r}), "center", {str(out)!r}, batch_size=8, shard_mb=0,
                       progress=False, on_batch=committed)
    """)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    # the first batch committed (the model build and its capture check can take a while
    # on a loaded machine), then a moment inside the second batch's time
    while not (progress_path(out).exists() and marker.exists()):
        assert proc.poll() is None, "extraction ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.1 + 0.2 * np.random.default_rng().random())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not is_complete(out)
    s = run_extraction(
        tiny_spec, tiny_manifest, "center", out, batch_size=8, progress=False, shard_mb=0
    )
    assert 1 <= s["resumed_from_batch"] < 4
    assert_same_arrays(arrays(out), reference)


def test_changed_settings_discard_a_partial_store(tmp_path, tiny_spec, tiny_manifest):
    out = tmp_path / "s.zarr"

    def boom(b):
        raise Killed

    with pytest.raises(Killed):
        run_extraction(
            tiny_spec,
            tiny_manifest,
            "center",
            out,
            batch_size=8,
            progress=False,
            shard_mb=0,
            on_batch=boom,
        )
    s = run_extraction(
        tiny_spec, tiny_manifest, "center", out, batch_size=8, dtype="bf16", progress=False
    )
    assert s["resumed_from_batch"] == 0
    assert open_store(out).attrs["vitlib"]["dtype"] == "bf16"


def test_batch_size_rounds_to_whole_cka_minibatches(tmp_path, tiny_spec, tiny_manifest):
    s = run_extraction(
        tiny_spec, tiny_manifest, "center", tmp_path / "r.zarr", batch_size=6, progress=False
    )
    g = open_store(tmp_path / "r.zarr")
    assert g.attrs["vitlib"]["batch_size"] == 8 and s["batches"] == 4


def test_a_finished_store_is_never_resumed_a_rerun_recomputes(
    tmp_path, tiny_spec, tiny_manifest, reference
):
    """The stale-store trap: rerunning a finished extraction (a checkpoint replaced under the
    same path, a forced rerun) must run every batch again, not 'resume' at the end."""
    import torch

    from vitlib.models.build import build_network
    from vitlib.store import progress_path

    out = tmp_path / "s.zarr"
    w0 = tmp_path / "w.pth"
    torch.save(build_network(tiny_spec).state_dict(), w0)
    run_extraction(
        tiny_spec,
        tiny_manifest,
        "center",
        out,
        batch_size=8,
        progress=False,
        shard_mb=0,
        weights_path=str(w0),
    )
    assert not progress_path(out).exists()  # removed on completion
    before = arrays(out)
    # new weights under the same file name
    net = build_network(tiny_spec)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)
    torch.save(net.state_dict(), w0)
    s = run_extraction(
        tiny_spec,
        tiny_manifest,
        "center",
        out,
        batch_size=8,
        progress=False,
        shard_mb=0,
        weights_path=str(w0),
    )
    assert s["resumed_from_batch"] == 0
    fresh = tmp_path / "fresh.zarr"
    run_extraction(
        tiny_spec,
        tiny_manifest,
        "center",
        fresh,
        batch_size=8,
        progress=False,
        weights_path=str(w0),
    )
    assert_same_arrays(arrays(out), arrays(fresh))
    assert any(not np.array_equal(before[k], arrays(out)[k]) for k in before)


def test_sharded_commits_resume_at_the_last_whole_shard(
    tmp_path, tiny_spec, tiny_manifest, reference
):
    """Two batches per shard: killed after batch 2 (mid-shard), the run resumes at batch 2
    (the last commit), rewrites it, and ends equal to the reference; one file per shard."""
    kw = dict(batch_size=8, progress=False)
    ref = open_store(tmp_path / "ref.zarr")
    # bytes of one batch of every per-image / per-minibatch array (the store has 4 batches)
    per_batch = sum(
        a.nbytes // 4
        for grp in ("feat", "attn", "gram", "resid")
        if grp in ref
        for _, a in ref[grp].arrays()
    )
    out = tmp_path / "sharded.zarr"

    def boom(b):
        if b == 2:
            raise Killed

    mb = 2.5 * per_batch / 2**20
    with pytest.raises(Killed):
        run_extraction(tiny_spec, tiny_manifest, "center", out, on_batch=boom, shard_mb=mb, **kw)
    assert zarr.open_group(str(out), mode="r").attrs["vitlib"]["shard_batches"] == 2
    assert sorted(os.listdir(out / "feat" / "block_cls" / "c")) == ["0"]  # shard 0 only
    s = run_extraction(tiny_spec, tiny_manifest, "center", out, shard_mb=mb, **kw)
    assert s["resumed_from_batch"] == 2
    assert_same_arrays(arrays(out), reference)
    assert sorted(os.listdir(out / "feat" / "block_cls" / "c")) == ["0", "1"]


def test_a_partial_store_is_not_resumed_with_another_checkpoint_under_the_same_name(
    tmp_path, tiny_spec, tiny_manifest
):
    """Killed half-way, the checkpoint replaced under the same path (a retrained mini-zoo
    model, a copied file): the store's identity holds the checkpoint's sha256, so the rerun
    starts from batch 0 and equals a fresh extraction with the new weights."""
    import torch

    from vitlib.models.build import build_network

    w = tmp_path / "w.pth"
    torch.save(build_network(tiny_spec).state_dict(), w)
    out = tmp_path / "s.zarr"
    kw = dict(batch_size=8, progress=False, shard_mb=0, weights_path=str(w))

    def boom(b):
        if b == 1:
            raise Killed

    with pytest.raises(Killed):
        run_extraction(tiny_spec, tiny_manifest, "center", out, on_batch=boom, **kw)
    net = build_network(tiny_spec)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    torch.save(net.state_dict(), w)
    s = run_extraction(tiny_spec, tiny_manifest, "center", out, **kw)
    assert s["resumed_from_batch"] == 0
    run_extraction(tiny_spec, tiny_manifest, "center", tmp_path / "fresh.zarr", **kw)
    assert_same_arrays(arrays(out), arrays(tmp_path / "fresh.zarr"))
    meta = open_store(out).attrs["vitlib"]
    from vitlib.models.weights import sha256_file

    assert meta["weights_sha256"] == sha256_file(w)


def test_a_partial_store_is_not_resumed_after_an_image_was_replaced(tmp_path, tiny_spec):
    """An image rewritten in place under its name: the manifest built again records every
    file's size and mtime (its digest changes), so the store starts from batch 0."""
    import shutil

    from vitlib.data.readers import build_manifest
    from vitlib.data.synthetic import generate

    world = generate(tmp_path / "w", size="tiny", seed=0, parts=["imagenet"], per_class=3)
    root = world / "imagenet" / "train"
    cfg = {"kind": "imagefolder", "cka_batch_size": 4}
    m0, _ = build_manifest("t", cfg, root)
    out = tmp_path / "s.zarr"
    kw = dict(batch_size=4, progress=False, shard_mb=0)

    def boom(b):
        if b == 0:
            raise Killed

    with pytest.raises(Killed):
        run_extraction(tiny_spec, m0, "center", out, on_batch=boom, **kw)
    victim = root / m0.items[-1].path
    shutil.copyfile(root / m0.items[0].path, victim)  # same name, other content
    m1, _ = build_manifest("t", cfg, root)
    assert m1.digest() != m0.digest()
    s = run_extraction(tiny_spec, m1, "center", out, **kw)
    assert s["resumed_from_batch"] == 0
    run_extraction(tiny_spec, m1, "center", tmp_path / "fresh.zarr", **kw)
    assert_same_arrays(arrays(out), arrays(tmp_path / "fresh.zarr"))


def test_listing_fingerprint_sees_a_file_rewritten_in_place(tmp_path):
    from vitlib.data.manifest import listing_fingerprint

    d = tmp_path / "cls"
    d.mkdir()
    (d / "a.png").write_bytes(b"1234")
    before = listing_fingerprint(tmp_path)
    time.sleep(0.01)
    (d / "a.png").write_bytes(b"12345")  # same name, same folder mtime
    assert listing_fingerprint(tmp_path) != before


def test_a_last_batch_without_a_whole_cka_minibatch_shares_a_shard(
    tmp_path, tiny_spec, tiny_manifest
):
    """10 images in batches of 4 with CKA minibatches of 4: the last batch (2 images) has no
    Gram rows; committed in one shard with the whole batches, the store holds the two whole
    minibatches' Grams and every image's rows (it used to fail at the final commit)."""
    from dataclasses import replace

    man = replace(tiny_manifest, items=tiny_manifest.items[:10])
    out = tmp_path / "s.zarr"
    run_extraction(tiny_spec, man, "center", out, batch_size=4, progress=False, shard_mb=256)
    assert is_complete(out)
    g = zarr.open_group(str(out), mode="r")
    assert g["gram/block_cls"].shape[0] == 2
    assert g["feat/block_cls"].shape[0] == 10
    whole = tmp_path / "w.zarr"  # the same 8 images alone: the same Grams
    run_extraction(
        tiny_spec, replace(man, items=man.items[:8]), "center", whole, batch_size=4, progress=False
    )
    w = zarr.open_group(str(whole), mode="r")
    np.testing.assert_array_equal(g["gram/block_cls"][:], w["gram/block_cls"][:])


class _FakeWriter:
    """Records what a BackgroundWriter hands it (slowly), or fails at one batch."""

    def __init__(self, fail_at: int = -1) -> None:
        self.got: list[tuple[int, float]] = []
        self.fail_at = fail_at
        self.path = "fake.zarr"

    def write_batch(self, batch, per_image, per_chunk, sums, per_token=None):  # type: ignore[no-untyped-def]
        time.sleep(0.01)
        if batch == self.fail_at:
            raise OSError(f"disk full at batch {batch}")
        self.got.append((batch, float(sums["s"][0])))


def test_background_writer_writes_in_order_with_the_sums_of_each_batch():
    from vitlib.store import BackgroundWriter

    fake = _FakeWriter()
    sums = {"s": np.zeros(1)}
    with BackgroundWriter(fake, depth=2) as bg:  # type: ignore[arg-type]
        for b in range(6):
            sums["s"] += 1  # the caller's running sums move on: each batch keeps its own
            bg.write_batch(b, {}, {}, sums)
    assert fake.got == [(b, b + 1.0) for b in range(6)]


def test_background_writer_raises_the_threads_error_and_lands_the_batches_before_it():
    from vitlib.store import BackgroundWriter

    fake = _FakeWriter(fail_at=2)
    with pytest.raises(OSError, match="batch 2"):
        with BackgroundWriter(fake, depth=1) as bg:  # type: ignore[arg-type]
            for b in range(6):
                bg.write_batch(b, {}, {}, {"s": np.zeros(1)})
    assert [b for b, _ in fake.got] == [0, 1]
    # the caller's own error wins, and the batches it handed over still land
    fake = _FakeWriter()
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(fake, depth=3) as bg:  # type: ignore[arg-type]
            for b in range(3):
                bg.write_batch(b, {}, {}, {"s": np.zeros(1)})
            raise KeyboardInterrupt
    assert [b for b, _ in fake.got] == [0, 1, 2]


def test_background_writer_writes_no_batch_after_a_failed_one():
    """Batches queued behind a failed write are not written: a commit after them would skip
    the failed batch (its rows missing, the progress past it)."""
    from vitlib.store import BackgroundWriter

    fake = _FakeWriter(fail_at=1)
    with pytest.raises(OSError, match="batch 1"):
        with BackgroundWriter(fake, depth=4) as bg:  # type: ignore[arg-type]
            for b in range(4):  # all four queued before batch 1's write fails
                bg.write_batch(b, {}, {}, {"s": np.zeros(1)})
    assert [b for b, _ in fake.got] == [0]
