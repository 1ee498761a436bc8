"""Leave-two-out splitting by time per user."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.data.hashing import mixed

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
MIN_INTERACTIONS_TO_HOLD_OUT = 3
SPLIT_SEED = 0


def assign_leave_two_out(
    interactions: pa.Table, by_time: bool = True, row_numbers: np.ndarray | None = None
) -> pa.Table:
    """Interactions sorted by (user, time, item_id) with ``split``: last = test, second last = valid.

    Without real timestamps (``by_time=False``) a seeded random order within each user stands in for time,
    so the held-out items are a random draw rather than the last ones in file order. The draw is a hash of
    each row's number in the input file (``row_numbers``, default 0..n-1), so a block of a user's rows gets
    the split the whole file would.
    """
    if by_time:
        keys = [("user_id", "ascending"), ("timestamp", "ascending"), ("item_id", "ascending")]
        order = pc.sort_indices(interactions, sort_keys=keys)
    else:
        rows = np.arange(interactions.num_rows) if row_numbers is None else np.asarray(row_numbers)
        draw = mixed(rows.astype(np.uint64) + np.uint64((SPLIT_SEED << 40) + 1))
        ranked = interactions.select(["user_id"]).append_column("draw", pa.array(draw))
        order = pc.sort_indices(ranked, sort_keys=[("user_id", "ascending"), ("draw", "ascending")])
    ordered = interactions.take(order)
    users = pc.dictionary_encode(ordered["user_id"]).combine_chunks().indices.to_numpy()
    position = np.arange(len(users))
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    lengths = np.diff(np.r_[starts, len(users)])
    ends = np.repeat(starts + lengths, lengths)
    from_end = ends - position - 1
    held_out = np.repeat(lengths >= MIN_INTERACTIONS_TO_HOLD_OUT, lengths)
    codes = np.where(held_out & (from_end == 0), 2, np.where(held_out & (from_end == 1), 1, 0))
    names = np.array(["train", "valid", "test"], dtype=object)
    return ordered.append_column("split", pa.array(names[codes], pa.string()))
