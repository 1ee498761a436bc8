"""Each user's top-K unseen items for blocks of users: Arrow rows in, Arrow rows out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch

from models.cf.ranking import topk_unseen
from models.data import encode_interactions, load_dataset


def seen_rows(data_dir: Path) -> dict[str, Any]:
    """Each user's items of every split as CSR arrays plus the user-id order of its rows.

    Held-out items count as seen: a user's CF items feed their profile's evidence, so a validation or test
    item among them would show the profiler the very item it is later ranked on.
    """
    encoded = encode_interactions(load_dataset(data_dir))
    seen = encoded.matrix(("train", "valid", "test"))
    return {"user_ids": encoded.user_ids, "indptr": seen.indptr, "indices": seen.indices}


class UnseenTopK:
    """The K best items outside each user's seen row, scored against every item (one matmul a block)."""

    def __init__(self, item_ids: pa.Array, item_emb: torch.Tensor, seen: dict[str, Any], k: int):
        self.item_ids, self.item_emb = item_ids, item_emb
        self.user_rows = pd.Index(seen["user_ids"].to_pandas())  # hashed once, looked up per block
        self.seen = sp.csr_matrix(
            (np.ones(len(seen["indices"]), np.float32), seen["indices"], seen["indptr"]),
            shape=(len(self.user_rows), len(item_ids)),
        )
        self.k = min(k, len(item_ids))

    def __call__(self, user_ids: pa.Array, user_emb: torch.Tensor) -> pa.Table:
        """``user_id``, ``item_ids`` (best first) and ``scores`` for one block; unknown users have seen
        nothing."""
        rows = self.user_rows.get_indexer(user_ids.to_numpy(zero_copy_only=False))
        known = rows >= 0
        seen = self.seen[np.where(known, rows, 0)]
        seen = seen.multiply(known[:, None].astype(np.float32)).tocsr()
        scores, index = topk_unseen(user_emb.to(self.item_emb.device), self.item_emb, seen, self.k)
        scores_np, index_np = scores.cpu().numpy(), index.cpu().numpy()
        valid = np.isfinite(scores_np)
        offsets = np.r_[0, np.cumsum(valid.sum(axis=1))].astype(np.int32)
        item_ids = pa.ListArray.from_arrays(offsets, self.item_ids.take(pa.array(index_np[valid])))
        score_list = pa.ListArray.from_arrays(offsets, pa.array(scores_np[valid], pa.float32()))
        return pa.table({"user_id": user_ids, "item_ids": item_ids, "scores": score_list})
