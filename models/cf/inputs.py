"""What CF training and evaluation read from a validated dataset, as index arrays and sparse matrices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from models.data import TailorBenchDataset, encode_interactions, encode_item_tags, sample_candidates


@dataclass(frozen=True)
class CFInputs:
    """Train matrix, item-tag pairs, held-out positives and seeded 1:99 test candidates of a dataset.

    ``valid`` and ``test`` hold every held-out item of each user (users x items); the 1:99 candidates
    keep one positive per user.
    """

    user_ids: pa.Array
    item_ids: pa.Array
    tag_names: pa.Array
    train: sp.csr_matrix
    item_index: np.ndarray
    tag_index: np.ndarray
    valid: sp.csr_matrix
    test: sp.csr_matrix
    test_candidates: tuple[np.ndarray, np.ndarray]
    validation: str = "given"

    @property
    def num_users(self) -> int:
        """Users (rows of the train matrix)."""
        return self.train.shape[0]

    @property
    def num_items(self) -> int:
        """Items of the catalogue."""
        return self.train.shape[1]

    @property
    def known_before_test(self) -> sp.csr_matrix:
        """Train and validation items of each user: what full ranking masks at test time (LightGCN's
        protocol masks every known item but the test ones; a held-out validation item left unmasked takes a
        top-K slot from the test items whenever the model ranks it well)."""
        return (self.train + self.valid).tocsr()

    @property
    def validation_users(self) -> int:
        """Users with at least one validation item."""
        return int((np.diff(self.valid.indptr) > 0).sum())

    @property
    def num_tags(self) -> int:
        """Distinct tags over all items."""
        return len(self.tag_names)


def cf_inputs(dataset: TailorBenchDataset, seed: int, num_negatives: int = 99) -> CFInputs:
    """Encode a dataset for CF: the train split only feeds the graph; valid/test are held out.

    A dataset without validation rows (train and test files only, as in LightGCN's format) gets one: each
    user's latest train interaction (a seeded random one when the dataset has no timestamps), for users
    with at least two; ``validation`` says which happened.
    """
    encoded = encode_interactions(dataset)
    validation = "given"
    if not encoded.mask(("valid",)).any():
        held_out = "held_out_last_train" if encoded.ordered else "held_out_random_train"
        encoded, validation = encoded.with_last_train_as_valid(seed), held_out
    tag_names, item_index, tag_index = encode_item_tags(dataset.items)
    sample = sample_candidates(encoded, "test", num_negatives=num_negatives, seed=seed, salt="cf")
    return CFInputs(
        user_ids=encoded.user_ids,
        item_ids=encoded.item_ids,
        tag_names=tag_names,
        train=encoded.matrix(("train",)),
        item_index=item_index,
        tag_index=tag_index,
        valid=encoded.matrix(("valid",)),
        test=encoded.matrix(("test",)),
        test_candidates=(sample.users, sample.candidates),
        validation=validation,
    )
