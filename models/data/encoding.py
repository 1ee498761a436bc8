"""Integer encodings of users, items and tags that the ML stages work on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from models.data.hashing import id_hashes, mixed
from models.data.loader import TailorBenchDataset
from models.data.split import SPLIT_CODES


@dataclass(frozen=True)
class EncodedInteractions:
    """Interactions as int arrays; ``user_ids``/``item_ids`` map an index back to its id."""

    user_ids: pa.Array
    item_ids: pa.Array
    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    split: np.ndarray
    ordered: bool = True

    @property
    def num_users(self) -> int:
        """Number of distinct users."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of items in the catalogue (interacted with or not)."""
        return len(self.item_ids)

    def mask(self, splits: Iterable[str]) -> np.ndarray:
        """Which interactions belong to any of ``splits``."""
        return np.isin(self.split, [SPLIT_CODES[s] for s in splits])

    def matrix(self, splits: Iterable[str] = ("train",)) -> sp.csr_matrix:
        """Binary users x items CSR matrix of the interactions in ``splits``."""
        keep = self.mask(splits)
        data = np.ones(int(keep.sum()), dtype=np.float32)
        m = sp.csr_matrix((data, (self.user[keep], self.item[keep])), shape=(self.num_users, self.num_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def last_per_user(self, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(users, items): each user's latest interaction in ``split``, for users that have one.

        Without real timestamps (``ordered`` false) "latest" is a seeded random one of the user's rows.
        """
        rows = np.flatnonzero(self.split == SPLIT_CODES[split])
        last = self._last_rows(rows, seed)
        return self.user[last], self.item[last]

    def with_last_train_as_valid(self, seed: int = 0) -> EncodedInteractions:
        """A copy with each user's latest train interaction as validation, for users with two or more.

        Without real timestamps the held-out interaction is a seeded random one, not the last in file order.
        """
        train = self.split == SPLIT_CODES["train"]
        counts = np.bincount(self.user[train], minlength=self.num_users)
        last = self._last_rows(np.flatnonzero(train & (counts[self.user] >= 2)), seed)
        split = self.split.copy()
        split[last] = SPLIT_CODES["valid"]
        return replace(self, split=split)

    def _last_rows(self, rows: np.ndarray, seed: int) -> np.ndarray:
        """Of ``rows``, each user's latest one (by time, or by a seeded draw when there is no time)."""
        time = self.timestamp[rows] if self.ordered else self._draws(rows, seed)
        order = rows[np.lexsort((time, self.user[rows]))]
        users = self.user[order]
        return order[np.r_[users[1:] != users[:-1], True]] if len(users) else order

    def _draws(self, rows: np.ndarray, seed: int) -> np.ndarray:
        """A seeded draw per row fixed by its (user id, item id) alone, so any part of the data holding a
        user's rows draws what the whole data does."""
        users, items = id_hashes(self.user_ids, f"draw{seed}"), id_hashes(self.item_ids, f"draw{seed}")
        return mixed(users[self.user[rows]] ^ (items[self.item[rows]] * np.uint64(0x9E3779B97F4A7C15)))


def encode_interactions(dataset: TailorBenchDataset) -> EncodedInteractions:
    """Users indexed in sorted id order, items in the row order of the items table."""
    inter = dataset.interactions
    user_ids = pc.unique(inter["user_id"]).sort()
    user = pc.index_in(inter["user_id"], value_set=user_ids).to_numpy().astype(np.int32)
    item_ids = dataset.items["item_id"].combine_chunks()
    item = pc.index_in(inter["item_id"], value_set=item_ids).to_numpy().astype(np.int32)
    split_names = pa.array(list(SPLIT_CODES), pa.string())
    split = pc.index_in(inter["split"], value_set=split_names).to_numpy().astype(np.int8)
    return EncodedInteractions(
        user_ids=user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids,
        item_ids=item_ids,
        user=user,
        item=item,
        timestamp=inter["timestamp"].to_numpy().astype(np.int64),
        split=split,
        ordered=dataset.has_timestamps,
    )


def encode_item_tags(items: pa.Table) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(tag_names, item_index, tag_index): the item-tag incidence as coordinate arrays, tags sorted."""
    tags = items["tags"].combine_chunks()
    lengths = pc.list_value_length(tags).to_numpy(zero_copy_only=False)
    item_index = np.repeat(np.arange(len(tags), dtype=np.int32), np.nan_to_num(lengths).astype(np.int64))
    flat = tags.flatten()
    tag_names = pc.unique(flat).sort()
    tag_index = pc.index_in(flat, value_set=tag_names).to_numpy().astype(np.int32)
    pairs = np.unique(np.stack([item_index, tag_index]), axis=1)
    return tag_names, pairs[0].astype(np.int32), pairs[1].astype(np.int32)
