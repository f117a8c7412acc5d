"""Names of the arrays in an extraction store: one constant per key, shared by the writers
(:mod:`vitlib.reducers`, :mod:`vitlib.extract`) and the reader (:class:`vitlib.store.Store`).

Per image (``[n, ...]``): features ``feat/<point>_<kind>``, token norms, residual norm ratios,
attention rows, distance and entropy. Per CKA minibatch (``[C, ...]``): ``gram/<point>_<kind>``.
Per dataset: ``sums/...``.  Token views: ``tokens``, ``offsets``, ``grid``, ``cls``.
"""

from __future__ import annotations

LABELS = "labels"
# token views (ragged)
TOKENS = "tokens"
OFFSETS = "offsets"
GRID = "grid"
TOKEN_CLS = "cls"
# segments pooled during the extraction (ragged per image by SEG_OFFSETS)
SEG_POOLED = "seg/pooled"  # [A, L, D] float32
SEG_CATEGORY = "seg/category"  # [A] int64
SEG_OFFSETS = "seg/offsets"  # [n + 1]
# tokens sampled per image during the extraction, with their labels (ragged by DENSE_OFFSETS)
DENSE_TOKENS = "dense/tokens"  # [T, L, D] block outputs of the sampled tokens
DENSE_LABEL = "dense/label"  # [T] int64 annotation category of the token (0: background)
DENSE_POS = "dense/pos"  # [T] int64 the token's row-major index in its image's grid
DENSE_OFFSETS = "dense/offsets"  # [n + 1]
# DAVIS label propagation during the extraction (ragged per frame by OFFSETS, token rows)
DAVIS_SOFT = "davis/soft"  # [T, L, C_max] float32 soft masks at token resolution
# SPair keypoint transfer during the extraction (ragged per source image by SPAIR_OFFSETS)
SPAIR_PRED = "spair/pred"  # [K, L, 2] float32 predicted target (x, y) in view pixels
SPAIR_PAIR = "spair/pair"  # [K] int64 the pair of each row (manifest.extra["pairs"] index)
SPAIR_OFFSETS = "spair/offsets"  # [n + 1]
# per image
TOKEN_NORM = "feat/block_token_norm"
ATTN_CLS_ROW = "attn/cls_row"
ATTN_SPATIAL_MEAN_ROW = "attn/spatial_mean_row"
ATTN_DISTANCE = "attn/distance"
ATTN_ENTROPY = "attn/entropy"
# [L, H, 2, P] float32: attention mass of the CLS query (0) and the mean spatial query (1)
# on each prefix key (CLS, registers); models with prefix tokens only
ATTN_PREFIX_MASS = "attn/prefix_mass"
# [L, 1, S]: the CLS / mean-spatial row of the attention rollout over spatial keys
ATTN_ROLLOUT_CLS = "attn/rollout_cls_row"
ATTN_ROLLOUT_SPATIAL = "attn/rollout_spatial_row"
# per dataset
SUM_N_IMAGES = "sums/n_images"
SUM_ALIGNED = "sums/attn_aligned"
SUM_NULL_ROWS = "sums/null_rows"

#: Token summaries of a capture point: the CLS token and the mean spatial token.
FEATURE_KINDS = ("cls", "spatial_mean")
#: Token sets of a Gram matrix.
GRAM_KINDS = ("cls", "spatial", "all")
#: Query sets of the dataset-average attention maps.
MAP_MODES = ("all", "spatial", "spatial_pure", "cls")
#: Query sets of the per-image attention entropy (last axis of ``attn/entropy``).
ENTROPY_QUERIES = ("cls", "spatial")


def feature(point: str, kind: str) -> str:
    """``feat/<point>_<kind>``: ``[n, L, D]`` (kind: ``cls`` or ``spatial_mean``)."""
    return f"feat/{point}_{kind}"


def gram(point: str, kind: str) -> str:
    """``gram/<point>_<kind>``: ``[C, L, b, b]`` (kind: ``cls``, ``spatial`` or ``all``)."""
    return f"gram/{point}_{kind}"


def norm_ratio(sub: str, kind: str) -> str:
    """``resid/<sub>_norm_ratio_<kind>``: ``[n, L]`` ‖skip‖ / ‖branch‖ of sub-block ``sub``."""
    return f"resid/{sub}_norm_ratio_{kind}"


def map_sum(mode: str) -> str:
    """``sums/attn_map_<mode>``: ``[L, H, N]`` summed per-image average attention maps."""
    return f"sums/attn_map_{mode}"
