"""The users+tags / items bipartite graph of TailorMind's hypergraph, symmetrically normalised."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class HypergraphAdjacency:
    """Undirected edges of X' = [X; Yᵀ] as a PyG edge list; nodes are users, then tags, then items."""

    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    num_users: int
    num_tags: int
    num_items: int
    _adjacency: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def num_nodes(self) -> int:
        """Users + tags + items."""
        return self.num_users + self.num_tags + self.num_items

    @property
    def item_offset(self) -> int:
        """Node index of item 0."""
        return self.num_users + self.num_tags

    def to(self, device: torch.device | str) -> HypergraphAdjacency:
        """The same graph with its tensors on ``device``."""
        edge_index, edge_weight = self.edge_index.to(device), self.edge_weight.to(device)
        return replace(self, edge_index=edge_index, edge_weight=edge_weight, _adjacency=None)

    def sparse_adjacency(self) -> torch.Tensor:
        """The weighted adjacency as a torch sparse CSR matrix (symmetric, so it is its own transpose).

        Message passing through one sparse matmul per layer is several times faster on CPU than
        scattering over the edge list.
        """
        if self._adjacency is None:
            size = (self.num_nodes, self.num_nodes)
            coo = torch.sparse_coo_tensor(self.edge_index, self.edge_weight, size, check_invariants=False)
            coo = coo.coalesce()
            with warnings.catch_warnings():  # torch calls sparse CSR "beta" on every process that builds one
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._adjacency = coo.to_sparse_csr()
        return self._adjacency


def build_hypergraph(
    train: sp.csr_matrix,
    item_index: np.ndarray,
    tag_index: np.ndarray,
    num_tags: int,
    use_tags: bool = True,
) -> HypergraphAdjacency:
    """Graph of train user-item and item-tag incidences, weighted 1/sqrt(deg_i * deg_j).

    Stored zeros in ``train`` are ignored and repeated user-item or item-tag pairs count once. With
    ``use_tags=False`` the graph has no tag nodes (plain LightGCN) and ``num_tags`` is ignored.
    """
    num_users, num_items = train.shape
    train_users, train_items = sp.csr_matrix(train).nonzero()
    users, items = _unique_pairs(train_users, train_items, num_items)
    tag_count = int(num_tags) if use_tags else 0
    row_nodes, item_nodes = [users], [items]
    if use_tags:
        item_index, tag_index = np.asarray(item_index, np.int64), np.asarray(tag_index, np.int64)
        _check_pairs(item_index, tag_index, num_items, tag_count)
        tag_items, tags = _unique_pairs(item_index, tag_index, tag_count)
        row_nodes.append(num_users + tags)
        item_nodes.append(tag_items)
    left = np.concatenate(row_nodes)
    right = np.concatenate(item_nodes) + num_users + tag_count
    edge_index = torch.from_numpy(np.stack([np.r_[left, right], np.r_[right, left]]))
    num_nodes = num_users + tag_count + num_items
    return HypergraphAdjacency(
        edge_index=edge_index,
        edge_weight=symmetric_weights(edge_index, num_nodes),
        num_users=num_users,
        num_tags=tag_count,
        num_items=num_items,
    )


def symmetric_weights(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Per-edge 1/sqrt(deg(src) * deg(dst)) as float32, with 0 for any endpoint of degree 0."""
    deg = torch.bincount(edge_index[0], minlength=num_nodes).to(torch.float32)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    return inv_sqrt[edge_index[0]] * inv_sqrt[edge_index[1]]


def _unique_pairs(rows: np.ndarray, cols: np.ndarray, num_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (row, col) pairs, sorted by row then column."""
    keys = np.unique(np.asarray(rows, np.int64) * max(num_cols, 1) + np.asarray(cols, np.int64))
    return keys // max(num_cols, 1), keys % max(num_cols, 1)


def _check_pairs(item_index: np.ndarray, tag_index: np.ndarray, num_items: int, num_tags: int) -> None:
    """Raise ValueError unless the item-tag coordinates are aligned and in range."""
    if item_index.shape != tag_index.shape or item_index.ndim != 1:
        raise ValueError(f"item_index {item_index.shape} and tag_index {tag_index.shape} must be equal 1-D")
    if len(item_index) and (item_index.min() < 0 or item_index.max() >= num_items):
        raise ValueError(f"item_index out of range [0, {num_items})")
    if len(tag_index) and (tag_index.min() < 0 or tag_index.max() >= num_tags):
        raise ValueError(f"tag_index out of range [0, {num_tags})")
