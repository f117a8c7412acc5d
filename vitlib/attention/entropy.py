"""Attention entropy per layer and head (beyond the paper).

The extraction stores, per image, the Shannon entropy of each head's attention rows over all
keys (``attn/entropy`` ``[n, L, H, 2]``: the CLS query, and the mean over spatial queries; see
:func:`vitlib.reducers.attention_entropy`).  This table averages it over images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.store import Store


def attention_entropy_table(store: Store | str) -> pd.DataFrame:
    """Mean attention entropy (nats) per (query, layer, head) over the images of a store.

    Columns ``layer, head, query`` (``cls`` or ``spatial``), ``metric`` (``entropy`` and
    ``uniform_entropy``, i.e. log N of the N keys: the entropy of uniform attention),
    ``value`` and ``n_images``.

    Examples
    --------
    A row spread uniformly over N keys has entropy log N; a one-hot row has 0:

    >>> import torch
    >>> from vitlib.reducers import attention_entropy
    >>> a = torch.zeros(1, 1, 5, 5); a[0, 0, 0] = 1 / 5; a[0, 0, 1:, 0] = 1
    >>> [round(float(v), 4) for v in attention_entropy(a, 1)[0, 0]]
    [1.6094, 0.0]
    """
    s = Store.open(store)
    acc = np.zeros((s.depth, s.num_heads, len(keys.ENTROPY_QUERIES)))
    for _, x in s.chunks(keys.ATTN_ENTROPY):
        acc += x.astype(np.float64).sum(0)
    n = s.n_items
    mean = acc / max(n, 1)
    L, H, Q = mean.shape
    layer, head, query = np.meshgrid(np.arange(L), np.arange(H), np.arange(Q), indexing="ij")
    n_keys = s.num_prefix_tokens + s.grid_hw[0] * s.grid_hw[1]
    t = pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": head.ravel(),
            "query": np.asarray(keys.ENTROPY_QUERIES)[query.ravel()],
            "metric": "entropy",
            "value": mean.ravel(),
        }
    )
    uni = t.assign(metric="uniform_entropy", value=float(np.log(n_keys)))
    out = pd.concat([t, uni], ignore_index=True)
    out["n_images"] = n
    return out
