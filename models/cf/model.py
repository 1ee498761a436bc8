"""TailorMind's hypergraph collaborative filter: LightGCN propagation over users+tags and items."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import LGConv

from models.cf.graph import HypergraphAdjacency

INIT_STD = 0.1


class _SymmetricConv(torch.autograd.Function):
    """One LGConv layer over a symmetric adjacency, whose backward is the same convolution of the gradient.

    Autograd's own backward of a sparse CSR product transposes the matrix on every call, which took five
    times the forward on CPU; the normalised adjacency is its own transpose, so the gradient needs none.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: LGConv, adjacency: torch.Tensor) -> torch.Tensor:
        ctx.conv, ctx.adjacency = conv, adjacency
        return conv(x, adjacency)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.conv(grad.contiguous(), ctx.adjacency), None, None


class HypergraphCF(nn.Module):
    """One embedding per user, tag and item, smoothed by ``layers`` rounds of normalised propagation.

    With ``unit_users`` the user outputs are unit vectors: a score is then an item's length times its cosine
    with the user, so the item's norm can carry its popularity while the user's cannot inflate every score.
    """

    def __init__(
        self,
        num_users: int,
        num_tags: int,
        num_items: int,
        dim: int = 64,
        layers: int = 3,
        unit_users: bool = False,
    ) -> None:
        super().__init__()
        self.num_users, self.num_tags, self.num_items = num_users, num_tags, num_items
        self.layers, self.unit_users = layers, unit_users
        self.embedding = nn.Embedding(num_users + num_tags + num_items, dim)
        nn.init.normal_(self.embedding.weight, std=INIT_STD)
        self.conv = LGConv(normalize=False)

    @property
    def num_nodes(self) -> int:
        """Users + tags + items."""
        return self.num_users + self.num_tags + self.num_items

    def initial(self) -> torch.Tensor:
        """Layer-0 embeddings of every node, [num_nodes, dim] (what BPR's L2 term penalises)."""
        return self.embedding.weight

    def propagate(self, graph: HypergraphAdjacency) -> torch.Tensor:
        """Final embeddings of every node: the mean of layers 0..L, [num_nodes, dim]."""
        self._check(graph)
        x = self.embedding.weight
        total = x
        adjacency = graph.sparse_adjacency()
        for _ in range(self.layers):
            x = _SymmetricConv.apply(x, self.conv, adjacency)
            total = total + x
        return total / (self.layers + 1)

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(users, tags, items) rows of a per-node tensor."""
        users, tags, items = torch.split(nodes, [self.num_users, self.num_tags, self.num_items])
        return users, tags, items

    def forward(self, graph: HypergraphAdjacency) -> tuple[torch.Tensor, torch.Tensor]:
        """(user_emb, item_emb): final embeddings whose dot product is the preference score."""
        users, _, items = self.split(self.propagate(graph))
        return (F.normalize(users, dim=1) if self.unit_users else users), items

    def _check(self, graph: HypergraphAdjacency) -> None:
        """Raise ValueError when the graph was built for a different node layout."""
        ours = (self.num_users, self.num_tags, self.num_items)
        theirs = (graph.num_users, graph.num_tags, graph.num_items)
        if ours != theirs:
            raise ValueError(f"graph has (users, tags, items) = {theirs} but the model has {ours}")
