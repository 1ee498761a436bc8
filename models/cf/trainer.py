"""One worker's CF training: its shard of each epoch's positives, one propagation per optimiser step."""

from __future__ import annotations

import time

import scipy.sparse as sp
import torch
from torch import nn

from models.cf.graph import HypergraphAdjacency
from models.cf.losses import bpr_loss, sampled_softmax_loss
from models.cf.model import HypergraphCF
from models.cf.sampling import sample_bpr_triples, seen_keys
from models.config import CFConfig


def cf_model(graph: HypergraphAdjacency, cf: CFConfig) -> HypergraphCF:
    """The model ``cf`` describes for ``graph``."""
    return HypergraphCF(graph.num_users, graph.num_tags, graph.num_items, cf.dim, cf.layers)


class CFTrainer:
    """Adam over ``model`` (bare or DDP-wrapped); ``epoch`` trains this rank's shard of the train pairs.

    BPR draws ``cf.bpr_negatives`` never-seen negatives per positive (a step holds ``cf.batch_size``
    positives with all their negatives); the softmax loss scores every positive of a step
    against ``cf.negatives`` uniform items shared by the step. Negatives avoid (BPR) only train items:
    excluding valid and test items would use held-out labels.
    """

    def __init__(
        self,
        model: nn.Module,
        graph: HypergraphAdjacency,
        train: sp.csr_matrix,
        cf: CFConfig,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.model, self.graph, self.cf, self.rank, self.world = model, graph, cf, rank, world
        core = model.module if hasattr(model, "module") else model
        assert isinstance(core, HypergraphCF), f"expected a HypergraphCF, got {type(core).__name__}"
        self.core = core
        self.device = self.core.embedding.weight.device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cf.lr)
        coo = train.tocoo()
        self.users = torch.as_tensor(coo.row, dtype=torch.int64, device=self.device)
        self.items = torch.as_tensor(coo.col, dtype=torch.int64, device=self.device)
        self.known = seen_keys(coo.row, coo.col, self.core.num_items).to(self.device)

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (seeded by its number); returns its mean loss, seconds and pairs per second."""
        started = time.perf_counter()
        order = torch.randperm(len(self.users), generator=torch.Generator().manual_seed(epoch * 1000 + 7))
        shard = order[self.rank :: self.world].to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(epoch * 1000 + self.rank)
        users, positives = self.users[shard], self.items[shard]
        negatives, per_pair = None, 1
        if self.cf.loss == "bpr":
            per_pair = self.cf.bpr_negatives
            users, positives, negatives = sample_bpr_triples(
                users.repeat_interleave(per_pair),
                positives.repeat_interleave(per_pair),
                self.core.num_items,
                self.known,
                generator,
            )
        per_worker = max(1, self.cf.batch_size // self.world) * per_pair
        steps = max(1, -(-len(users) // per_worker))
        self.model.train()
        total = 0.0
        for step in range(steps):
            batch = slice(step * per_worker, (step + 1) * per_worker)
            loss = self._loss(
                users[batch], positives[batch], None if negatives is None else negatives[batch], generator
            )
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
        seconds = time.perf_counter() - started
        return {
            "loss": total / steps,
            "epoch_seconds": seconds,
            "pairs_per_second": len(users) // per_pair * self.world / seconds,
        }

    def _loss(
        self,
        users: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        user_final, item_final = self.model(self.graph)
        initial = self.core.initial()
        item0 = initial[self.core.num_users + self.core.num_tags :]
        if negatives is not None:
            return bpr_loss(
                user_final[users],
                item_final[positives],
                item_final[negatives],
                initial[users],
                item0[positives],
                item0[negatives],
                self.cf.l2,
            )
        shared = torch.randint(
            self.core.num_items, (self.cf.negatives,), generator=generator, device=generator.device
        ).to(self.device)
        return sampled_softmax_loss(
            user_final[users],
            item_final[positives],
            item_final[shared],
            positives,
            shared,
            initial[users],
            item0[positives],
            self.cf.temperature,
            self.cf.l2,
        )
