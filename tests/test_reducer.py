"""Streaming reductions equal the same quantities computed from the full captured tensors."""

import numpy as np
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
