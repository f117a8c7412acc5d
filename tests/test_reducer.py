"""Streaming reductions equal the same quantities computed from the full captured tensors."""

import numpy as np
import pytest
import torch

from vitlib.attention import aligned_aggregate, mean_attention_distance
from vitlib.models import Capture
from vitlib.reducers import StreamingReducer


def test_reducer_matches_full_capture(tiny_model, tiny_spec):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    full = Capture(tiny_model, points=("block",)).collect(x)
    red = StreamingReducer(
        depth=3,
        num_heads=2,
        embed_dim=32,
        grid_hw=(4, 4),
        cka_batch_size=4,
        feature_dtype="float32",
    )
    Capture(tiny_model, points=("block",))(x, red)
    red.accumulate()
    img, chk = red.batch_arrays()
    tok = full.tokens["block"].numpy()  # [L, B, N, D]
    att = full.attention.numpy()  # [L, B, H, N, N]
    np.testing.assert_allclose(img["feat/block_cls"], tok[:, :, 0].transpose(1, 0, 2), rtol=1e-6)
    np.testing.assert_allclose(
        img["feat/block_spatial_mean"],
        tok[:, :, 1:].mean(2).transpose(1, 0, 2),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        img["attn/cls_row"], att[:, :, :, 0, 1:].transpose(1, 0, 2, 3), rtol=1e-6
    )
    np.testing.assert_allclose(
        img["attn/spatial_mean_row"], att[:, :, :, 1:, 1:].mean(3).transpose(1, 0, 2, 3), rtol=1e-5
    )
    np.testing.assert_allclose(
        img["attn/distance"], mean_attention_distance(att, (4, 4), 1).transpose(1, 0, 2), rtol=1e-5
    )
    # Grams: 2 CKA minibatches of 4 images, X Xᵀ of the flattened tokens
    for kind, X in (("cls", tok[:, :, 0]), ("spatial", tok[:, :, 1:]), ("all", tok)):
        assert chk[f"gram/block_{kind}"].shape == (2, 3, 4, 4)
        for c in range(2):
            for layer in range(3):
                f = X[layer, 4 * c : 4 * c + 4].reshape(4, -1).astype(np.float64)
                np.testing.assert_allclose(
                    chk[f"gram/block_{kind}"][c, layer], f @ f.T, rtol=1e-4, atol=1e-4
                )
    s = red.sums
    assert s["sums/n_images"] == 8
    np.testing.assert_allclose(s["sums/attn_map_cls"], att[:, :, :, 0, :].sum(1), rtol=1e-5)
    np.testing.assert_allclose(s["sums/attn_map_all"], att.mean(3).sum(1), rtol=1e-5)
    np.testing.assert_allclose(
        s["sums/attn_map_spatial"], att[:, :, :, 1:, :].mean(3).sum(1), rtol=1e-5
    )
    pure = att[:, :, :, 1:, :].copy()
    pure[..., 0] = 0
    pure /= pure.sum(-1, keepdims=True)
    np.testing.assert_allclose(s["sums/attn_map_spatial_pure"], pure.mean(3).sum(1), rtol=1e-5)
    # aligned sums / (images × queries) = the per-(image, query) mean AAAM
    aaam = aligned_aggregate(att, (4, 4), 1).mean(1)  # [L, H, 7, 7]
    np.testing.assert_allclose(s["sums/attn_aligned"] / (8 * 16), aaam, rtol=1e-5, atol=1e-8)
    assert s["sums/null_rows"].sum() == 0


def test_incomplete_cka_minibatch_is_not_grammed(tiny_model):
    red = StreamingReducer(depth=3, num_heads=2, embed_dim=32, grid_hw=(4, 4), cka_batch_size=4)
    Capture(tiny_model)(torch.randn(6, 3, 32, 32), red)  # one full minibatch + 2 spare images
    _, chk = red.batch_arrays()
    assert chk["gram/block_all"].shape[0] == 1


def test_residual_branches_grams_and_norm_ratios(tiny_model):
    """Derived branches equal the sub-blocks' own outputs (timm ls1/ls2), Grams and ratios too."""
    torch.manual_seed(2)
    x = torch.randn(8, 3, 32, 32)
    pts = ("attn_skip", "attn_branch", "mlp_skip", "mlp_branch", "norm1")
    full = Capture(tiny_model, points=pts).collect(x).tokens
    red = StreamingReducer(
        depth=3,
        num_heads=2,
        embed_dim=32,
        grid_hw=(4, 4),
        cka_batch_size=4,
        gram_points=("norm1", "attn_skip", "attn_branch", "mlp_branch"),
        residual_norms=True,
        feature_dtype="float32",
    )
    assert set(red.capture_points()) == {"block", "norm1", "attn_skip", "mlp_skip"}
    Capture(tiny_model, points=red.capture_points())(x, red)
    img, chk = red.batch_arrays()
    for p in ("norm1", "attn_skip", "attn_branch", "mlp_branch"):
        t = full[p].numpy().astype(np.float64)  # [L, B, N, D]
        for c in range(2):
            f = t[:, 4 * c : 4 * c + 4].reshape(3, 4, -1)
            np.testing.assert_allclose(
                chk[f"gram/{p}_all"][c], f @ f.transpose(0, 2, 1), rtol=1e-4, atol=1e-4
            )
    for sub in ("attn", "mlp"):
        s, b = full[f"{sub}_skip"], full[f"{sub}_branch"]
        ref = (s.flatten(2).norm(dim=-1) / b.flatten(2).norm(dim=-1)).T  # [B, L]
        np.testing.assert_allclose(img[f"resid/{sub}_norm_ratio_all"], ref.numpy(), rtol=1e-4)
        ref_cls = (s[:, :, 0].norm(dim=-1) / b[:, :, 0].norm(dim=-1)).T
        np.testing.assert_allclose(img[f"resid/{sub}_norm_ratio_cls"], ref_cls.numpy(), rtol=1e-4)


def _reduce(att, P, grid, entropy=True, logits=None, compile=False):
    """Reduce a synthetic attention tensor [L, B, H, N, N] layer by layer (``logits``:
    the scores it is the softmax of, handed along; ``compile``: the compiled row blocks)."""
    L, B, H = att.shape[:3]
    red = StreamingReducer(
        depth=L,
        num_heads=H,
        embed_dim=4,
        grid_hw=grid,
        num_prefix_tokens=P,
        token_points=(),
        entropy=entropy,
        feature_dtype="float32",
        compile=compile,
    )
    red.begin_batch(B)
    for layer in range(L):
        red.on_attention(layer, att[layer], logits=None if logits is None else logits[layer])
    red.end_batch()
    red.accumulate()
    return {k: v.numpy() for k, v in red.per_image.items()}, red.sums


def test_row_blocks_of_every_size_and_bf16_input_give_the_same_reductions(monkeypatch):
    """The CPU reduces (image, head) row blocks of ~CHUNK_BYTES, whole images, or heads of one
    image when an image does not fit: blocks of one, two and three heads, of one image, of
    several images and of the whole tensor agree; a bf16 tensor is
    reduced in fp32 (equal to reducing its fp32 upcast); registers (P = 2) and rows without
    spatial mass (null rows) are handled the same in every block size."""
    torch.manual_seed(0)
    L, B, H, P, grid = 2, 5, 6, 2, (3, 4)
    N = P + 12
    att = (3 * torch.randn(L, B, H, N, N)).softmax(-1)
    att[0, 1, 2, P + 3, P:] = 0  # a null row: all mass on prefix keys
    att[0, 1, 2, P + 3, :P] = 0.5
    row = 4 * N * N
    results = []
    # (row-block bytes, head-block bytes): single heads, two and three heads of one image,
    # one image, two images, three images, everything
    for chunk, heads in ((1, 1), (1, 2 * row), (1, 3 * row), (6 * row, 0), (13 * row, 0)) + (
        (18 * row, 0),
        (10**9, 0),
    ):
        monkeypatch.setattr(StreamingReducer, "CHUNK_BYTES", chunk)
        monkeypatch.setattr(StreamingReducer, "HEAD_BLOCK_BYTES", heads)
        assert StreamingReducer._chunk_rows(B * H, H, N, torch.device("cpu")) == (
            {1: 1, 2 * row: 2, 3 * row: 3}[heads] if chunk == 1 else min(B, chunk // (6 * row)) * H
        )
        results.append(_reduce(att, P, grid))
    ref_img, ref_sums = results[-1]
    assert ref_sums["sums/null_rows"][0, 2] == 1
    for img, sums in results[:-1]:
        for k in ref_img:
            np.testing.assert_allclose(img[k], ref_img[k], rtol=1e-5, atol=1e-7, err_msg=k)
        for k in ref_sums:
            np.testing.assert_allclose(sums[k], ref_sums[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # the reference is itself right: distance of the loop formulation, entropy by hand
    a = att.numpy().astype(np.float64)
    np.testing.assert_allclose(
        ref_img["attn/distance"],
        mean_attention_distance(a, grid, P).transpose(1, 0, 2),
        rtol=1e-5,
    )
    ent = -(a * np.log(np.where(a > 0, a, 1))).sum(-1)  # [L, B, H, N]
    np.testing.assert_allclose(
        ref_img["attn/entropy"][..., 0], ent[..., 0].transpose(1, 0, 2), rtol=1e-5
    )
    np.testing.assert_allclose(
        ref_img["attn/entropy"][..., 1], ent[..., P:].mean(-1).transpose(1, 0, 2), rtol=1e-5
    )
    monkeypatch.setattr(StreamingReducer, "CHUNK_BYTES", 6 * row)
    bf = att.bfloat16()
    img16, sums16 = _reduce(bf, P, grid)
    img32, sums32 = _reduce(bf.float(), P, grid)
    for k in img32:
        np.testing.assert_allclose(img16[k], img32[k], rtol=1e-6, atol=1e-7, err_msg=k)
    for k in sums32:
        np.testing.assert_allclose(sums16[k], sums32[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_all_token_gram_is_spatial_plus_prefix_for_any_prefix_count():
    """Gram of all tokens = Gram of spatial tokens + Gram of prefix tokens; checked
    against X Xᵀ of the flattened tokens with registers (P = 2), CLS only and no prefix."""
    torch.manual_seed(0)
    for P in (0, 1, 2):
        x = torch.randn(8, P + 6, 5)
        red = StreamingReducer(
            depth=1,
            num_heads=1,
            embed_dim=5,
            grid_hw=(2, 3),
            num_prefix_tokens=P,
            attention=False,
            cka_batch_size=4,
            feature_dtype="float32",
        )
        red.begin_batch(8)
        red.on_tokens("block", 0, x)
        red.end_batch()
        chk = {k: v.numpy() for k, v in red.per_chunk.items()}
        xs = x.double().numpy()
        cls = xs[:, 0] if P else xs[:, P:].mean(1)
        for kind, X in (("cls", cls), ("spatial", xs[:, P:]), ("all", xs)):
            for c in range(2):
                f = X[4 * c : 4 * c + 4].reshape(4, -1)
                np.testing.assert_allclose(
                    chk[f"gram/block_{kind}"][c, 0],
                    f @ f.T,
                    rtol=1e-5,
                    atol=1e-5,
                    err_msg=f"{P} {kind}",
                )


def test_rollout_and_prefix_mass_match_the_reference_formulas():
    """Attention rollout as vit-explain (jacobgil) computes it — heads fused by their mean,
    ``(A + I) / 2`` renormalised, ``result = a @ result`` from the first block — read at every
    block over the spatial keys; and the prefix-key mass of the CLS and mean spatial query,
    on a model with four registers (P = 5)."""
    import timm

    torch.manual_seed(1)
    m = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=28,
        embed_dim=48,
        depth=3,
        num_heads=3,
    ).eval()
    x = torch.randn(3, 3, 28, 28)
    att = Capture(m, points=("block",)).collect(x).attention  # [L, B, H, N, N]
    P = 5
    red = StreamingReducer(
        depth=3,
        num_heads=3,
        embed_dim=48,
        grid_hw=(2, 2),
        num_prefix_tokens=P,
        attention=False,
        token_norms=False,
        prefix_attention=True,
        rollout=True,
        feature_dtype="float32",
    )
    assert red.needs_attention
    Capture(m, points=("block",))(x, red)
    img, _ = red.batch_arrays()
    n = att.shape[-1]
    result = torch.eye(n)
    for layer in range(3):
        fused = att[layer].mean(1)
        a = (fused + torch.eye(n)) / 2
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
        np.testing.assert_allclose(
            img["attn/rollout_cls_row"][:, layer, 0], result[:, 0, P:].numpy(), atol=1e-6
        )
        np.testing.assert_allclose(
            img["attn/rollout_spatial_row"][:, layer, 0],
            result[:, P:, P:].mean(1).numpy(),
            atol=1e-6,
        )
        pm = img["attn/prefix_mass"][:, layer]  # [B, H, 2, P]
        np.testing.assert_allclose(pm[:, :, 0], att[layer][:, :, 0, :P].numpy(), atol=1e-7)
        np.testing.assert_allclose(pm[:, :, 1], att[layer][:, :, P:, :P].mean(2).numpy(), atol=1e-7)
    # no prefix tokens (SigLIP): no prefix array, the rollout's "CLS" row is the spatial one
    red0 = StreamingReducer(
        depth=3,
        num_heads=3,
        embed_dim=48,
        grid_hw=(2, 2),
        num_prefix_tokens=0,
        prefix_attention=True,
        rollout=True,
    )
    assert "attn/prefix_mass" not in {s.name for s in red0.image_specs()}


def test_entropy_from_the_scores_equals_the_direct_formula(monkeypatch):
    """Σ p log p from the scores (one log per row: log p = s − max s + log p_max) equals
    −Σ p log p computed by hand, in every block size, with registers, rows whose mass
    sits on prefix keys and near-one-hot rows (p ~ 1e-30 entries); with bf16 scores and
    probabilities it stays within the bf16 rounding of the direct formula on the same p."""
    torch.manual_seed(3)
    L, B, H, P, grid = 2, 5, 3, 2, (3, 4)
    N = P + 12
    s = 3 * torch.randn(L, B, H, N, N)
    s[0, 1, 2, P + 3, :P] = 40.0  # mass on the prefix keys
    s[1, 0, 1, 0, P + 5] = 80.0  # a near one-hot CLS row
    att = s.softmax(-1)
    a = att.double().numpy()
    ent = -(a * np.log(np.where(a > 0, a, 1))).sum(-1)  # [L, B, H, N]
    row = 4 * N * N
    for chunk in (1, 4 * row, 10**9):
        monkeypatch.setattr(StreamingReducer, "CHUNK_BYTES", chunk)
        monkeypatch.setattr(StreamingReducer, "HEAD_BLOCK_BYTES", row)
        img, _ = _reduce(att, P, grid, logits=s)
        ref_img, _ = _reduce(att, P, grid)
        np.testing.assert_allclose(
            img["attn/entropy"][..., 0], ent[..., 0].transpose(1, 0, 2), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            img["attn/entropy"][..., 1],
            ent[..., P:].mean(-1).transpose(1, 0, 2),
            rtol=1e-5,
            atol=1e-6,
        )
        for k in ref_img:  # everything else is untouched by the scores
            if k != "attn/entropy":
                np.testing.assert_array_equal(img[k], ref_img[k], err_msg=k)
    img16, _ = _reduce(att.bfloat16(), P, grid, logits=s.bfloat16())
    ref16, _ = _reduce(att.bfloat16(), P, grid)
    np.testing.assert_allclose(img16["attn/entropy"], ref16["attn/entropy"], rtol=0, atol=2e-2)


def test_every_gram_point_and_norm_ratio_with_shared_passes(tiny_model):
    """The paper preset's capture: Grams of all seven points and the norm ratios, with a
    block's input Grams taken from the previous block's output (the same tensor), branch
    norms from the Gram diagonals and, for the images outside whole minibatches (6 images,
    minibatches of 4), computed directly — all equal to recomputing from the full capture."""
    torch.manual_seed(4)
    x = torch.randn(6, 3, 32, 32)
    pts = ("block", "norm1", "norm2", "attn_skip", "attn_branch", "mlp_skip", "mlp_branch")
    full = Capture(tiny_model, points=pts).collect(x).tokens
    red = StreamingReducer(
        depth=3,
        num_heads=2,
        embed_dim=32,
        grid_hw=(4, 4),
        cka_batch_size=4,
        gram_points=pts,
        residual_norms=True,
        feature_dtype="float32",
    )
    Capture(tiny_model, points=red.capture_points(), logits=True)(x, red)
    img, chk = red.batch_arrays()
    for p in pts:
        t = full[p].double()  # [L, B, N, D]
        for kind, X in (("cls", t[:, :4, 0]), ("spatial", t[:, :4, 1:]), ("all", t[:, :4])):
            f = X.reshape(3, 4, -1)
            ref = (f @ f.transpose(1, 2)).numpy()
            np.testing.assert_allclose(chk[f"gram/{p}_{kind}"][0], ref, rtol=1e-5, err_msg=p)
    np.testing.assert_array_equal(chk["gram/attn_skip_all"][:, 1:], chk["gram/block_all"][:, :-1])
    for sub in ("attn", "mlp"):
        s, b = full[f"{sub}_skip"].double(), full[f"{sub}_branch"].double()
        for kind, sl in (("all", slice(None)), ("cls", slice(0, 1)), ("spatial", slice(1, None))):
            ref = s[:, :, sl].flatten(2).norm(dim=-1) / b[:, :, sl].flatten(2).norm(dim=-1)
            np.testing.assert_allclose(
                img[f"resid/{sub}_norm_ratio_{kind}"], ref.T.numpy(), rtol=1e-5, err_msg=kind
            )


def test_capture_dispatches_a_fixed_number_of_ops_per_batch(monkeypatch, tiny_spec, tiny_model):
    """On a GPU every op is a kernel launch: the capture with every reduction of the default
    needs must dispatch as many ops for a batch of 16 as for a batch of 4 (no loop over the
    images of a batch; one launch per image cost most of the capture's time on an H100)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    from vitlib.extract import make_reducer, reduced_plan

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: Counter[str] = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    # the GPU's blocking: all (image, head) rows of a block at once
    monkeypatch.setattr(StreamingReducer, "_chunk_rows", staticmethod(lambda r, h, n, d: r))
    plan = reduced_plan(tiny_spec, None, gram_points=("block",), residual_norms=False)
    counts = []
    for b in (4, 16):
        red = make_reducer(tiny_spec, plan, cka_batch_size=4, feature_dtype="float16")
        cap = Capture(
            tiny_model,
            points=red.capture_points(),
            attention=red.needs_attention,
            logits=red.wants_logits,
        )
        x = torch.randn(b, 3, tiny_spec.img_size, tiny_spec.img_size)
        with Count() as c:
            cap(x, red)
            red.accumulate()
            red.batch_arrays()
        counts.append(c.ops)
    assert counts[0] == counts[1], counts[1] - counts[0]


def test_compiled_row_blocks_equal_the_eager_reductions(monkeypatch):
    """torch.compile'd row blocks (a few fused passes) give the eager reductions: whole-image
    blocks and blocks of heads, registers (P = 2), a null row, scores and no scores, bf16
    input; a compiler that fails leaves the eager function for the rest of the run."""
    import vitlib.reducers as reducers

    torch.manual_seed(4)
    L, B, H, P, grid = 2, 4, 3, 2, (3, 4)
    N = P + 12
    s = 3 * torch.randn(L, B, H, N, N)
    att = s.softmax(-1)
    att[0, 1, 2, P + 3, P:] = 0  # a null row: all its mass on the prefix keys
    att[0, 1, 2, P + 3, :P] = 0.5
    row = 4 * N * N
    for chunk, heads in ((2 * H * row, 0), (1, row)):  # two whole images; single heads
        monkeypatch.setattr(StreamingReducer, "CHUNK_BYTES", chunk)
        monkeypatch.setattr(StreamingReducer, "HEAD_BLOCK_BYTES", heads)
        for a, sc in ((att, s), (att, None), (att.bfloat16(), s.bfloat16())):
            eager = _reduce(a, P, grid, logits=sc)
            comp = _reduce(a, P, grid, logits=sc, compile=True)
            for ref, got in zip(eager, comp, strict=True):
                for k in ref:
                    np.testing.assert_allclose(got[k], ref[k], rtol=2e-5, atol=1e-6, err_msg=k)
    assert eager[1]["sums/null_rows"].sum() == 1

    def broken() -> object:
        def fail(*a: object, **k: object) -> None:
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(reducers, "_compiled_row_block", broken)
    got = _reduce(att, P, grid, logits=s, compile=True)
    ref = _reduce(att, P, grid, logits=s)
    for k in ref[0]:
        np.testing.assert_array_equal(got[0][k], ref[0][k], err_msg=k)


def test_extract_compile_auto_compiles_only_where_the_attention_work_repays_it():
    """extract.compile: true/false as given; auto from images × blocks × heads × tokens²
    (ViT-S/16: 12 × 6 × 197² = 2.79e6 per image, so 3,583 images reach 1e10); never
    without attention reductions; anything else is an error naming the key."""
    import pytest

    from vitlib.extract import COMPILE_AUTO_WORK, compile_reductions
    from vitlib.models.registry import spec_from_config

    s16 = spec_from_config("s16", {"arch": "vit_small_patch16_224", "family": "random"})
    demo = spec_from_config(
        "demo",
        {
            "arch": "vit_small_patch16_224",
            "family": "random",
            "arch_kwargs": {
                "img_size": 64,
                "patch_size": 8,
                "embed_dim": 96,
                "depth": 6,
                "num_heads": 3,
            },
        },
    )
    per_image = 12 * 6 * 197**2
    assert COMPILE_AUTO_WORK == 1e10 and per_image == 2_794_248
    att = ["attention", "features"]
    assert not compile_reductions("auto", s16, 3578, att)  # 9.998e9
    assert compile_reductions("auto", s16, 3579, att)  # 1.0001e10
    assert compile_reductions("auto", s16, 5000, ["attention_entropy"])
    assert not compile_reductions("auto", s16, 10**6, ["features", "grams"])
    assert not compile_reductions("auto", demo, 10**4, att)  # 6 × 3 × 65² per image: 7.6e8
    assert compile_reductions(True, demo, 1, att) and not compile_reductions(False, s16, 10**6, att)
    with pytest.raises(ValueError, match="extract.compile"):
        compile_reductions("yes", s16, 1, att)


def test_gpu_row_blocks_are_whole_images_within_the_byte_cap():
    """On a GPU: whole images up to GPU_BLOCK_BYTES of fp32 rows (256 MiB): a ViT-B/16
    batch of 64 (12 × 4 · 197² bytes per image, 119 MB in all) is one block, a ViT-B/8 one
    (29.6 MB per image) blocks of 9 images (8 blocks for 64 images)."""
    gpu = torch.device("cuda")  # a device object only: nothing runs on it
    assert StreamingReducer.GPU_BLOCK_BYTES == 256 << 20
    assert StreamingReducer._chunk_rows(64 * 12, 12, 197, gpu) == 64 * 12
    assert StreamingReducer._chunk_rows(64 * 12, 12, 785, gpu) == 9 * 12
    assert StreamingReducer._chunk_rows(4 * 12, 12, 3000, gpu) == 12  # at least one image


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("blocks", ["whole batch", "images", "heads"])
def test_streamed_attention_equals_the_hooked_capture(
    monkeypatch, tiny_spec, tiny_model, dtype, blocks
):
    """timm's Attention computed block by block inside the module (the extraction's route)
    gives what the hooked capture of the whole [B, H, N, N] tensor gives: the same tokens
    (so the same network output), the same reductions, every blocking; attn_drop — where the
    hooks take the probabilities — never runs on the streamed route."""
    from vitlib.extract import make_reducer, reduced_plan
    from vitlib.models.capture import streamable

    assert all(streamable(b.attn) for b in tiny_model.blocks)
    N, H = tiny_spec.num_tokens, tiny_spec.num_heads
    row = 4 * N * N
    chunk = {"whole batch": 1 << 30, "images": 2 * H * row, "heads": row}[blocks]
    monkeypatch.setattr(StreamingReducer, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(StreamingReducer, "HEAD_BLOCK_BYTES", row)
    plan = reduced_plan(tiny_spec, None, gram_points=("block", "attn_branch"), residual_norms=True)
    torch.manual_seed(0)
    x = torch.randn(6, 3, tiny_spec.img_size, tiny_spec.img_size)
    got = {}
    drops: list[int] = []
    for stream in (True, False):
        drops.clear()
        handles = [
            b.attn.attn_drop.register_forward_hook(lambda *a: drops.append(1))
            for b in tiny_model.blocks
        ]
        red = make_reducer(tiny_spec, plan, cka_batch_size=2, feature_dtype="float32")
        cap = Capture(
            tiny_model,
            points=red.capture_points(),
            attention=red.needs_attention,
            dtype=dtype,
            logits=red.wants_logits,
            stream=stream,
        )
        cap(x, red)
        for h in handles:
            h.remove()
        red.accumulate()
        img, chk = red.batch_arrays()
        got[stream] = (img, chk, {k: v.copy() for k, v in red.sums.items()})
        assert len(drops) == (0 if stream else len(tiny_model.blocks))
    tol = {"fp32": dict(rtol=1e-5, atol=1e-6), "bf16": dict(rtol=2e-2, atol=2e-3)}[dtype]
    for a, b in zip(got[True], got[False]):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(
                np.asarray(a[k], float), np.asarray(b[k], float), err_msg=k, **tol
            )


def test_the_extraction_streams_attention_on_a_cpu_in_fp32_only(tiny_spec, tiny_model):
    """vitlib.extract.streams_attention: the measured choice of route (benchmarks, capture)."""
    from vitlib.extract import make_capture, make_reducer, reduced_plan, streams_attention

    red = make_reducer(
        tiny_spec,
        reduced_plan(tiny_spec, None, gram_points=("block",), residual_norms=False),
        cka_batch_size=0,
        feature_dtype="float16",
    )
    assert make_capture(tiny_model, red, "fp32").stream
    assert not make_capture(tiny_model, red, "bf16").stream
    assert make_capture(tiny_model, red, "bf16", stream=True).stream
    assert not streams_attention("fp32", torch.device("cuda"))
