"""CF training: a worker's optimiser steps (``CFTrainer``) and the validated loop around them (``CFFit``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from models.cf.graph import HypergraphAdjacency
from models.cf.losses import bpr_loss, sampled_softmax_loss
from models.cf.model import HypergraphCF
from models.cf.sampling import sample_bpr_triples, seen_keys
from models.cf.stopping import EarlyStopping
from models.config import CFConfig


def cf_model(graph: HypergraphAdjacency, cf: CFConfig) -> HypergraphCF:
    """The model ``cf`` describes for ``graph`` (unit-length user outputs under the softmax loss)."""
    return HypergraphCF(
        graph.num_users, graph.num_tags, graph.num_items, cf.dim, cf.layers, unit_users=cf.loss == "softmax"
    )


class CFTrainer:
    """Adam over ``model`` (bare or DDP-wrapped); ``train_steps`` continues through this rank's epochs.

    An epoch is ``ceil(train pairs / cf.batch_size)`` steps on every rank (each rank takes its shard of a
    seeded permutation), so DDP ranks always step together. BPR draws ``cf.bpr_negatives`` never-seen
    negatives per positive; the softmax loss scores every positive of a step against
    ``cf.shared_negatives`` uniform items shared by the step. Negatives avoid (BPR) only train items:
    excluding valid and test items would use held-out labels. Every draw is seeded by its epoch and step,
    so a resumed trainer repeats what an uninterrupted one would have done.
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
        self.steps_per_epoch = max(1, -(-len(self.users) // cf.batch_size))
        self.epoch, self.step_in_epoch, self.steps = 1, 0, 0
        self._plan: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None = None

    def train_steps(self, count: int) -> dict[str, float]:
        """Take ``count`` optimiser steps; returns their mean loss, seconds and train pairs per second."""
        started, total, pairs = time.perf_counter(), 0.0, 0
        self.model.train()
        for _ in range(count):
            if self._plan is None:
                self._plan = self._epoch_plan(self.epoch)
            users, positives, negatives = self._plan[self.step_in_epoch]
            seed = (self.epoch * 1_000_003 + self.step_in_epoch) * 64 + self.rank
            loss = self._loss(users, positives, negatives, torch.Generator().manual_seed(seed))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
            pairs += len(positives) // (self.cf.bpr_negatives if negatives is not None else 1)
            self.steps, self.step_in_epoch = self.steps + 1, self.step_in_epoch + 1
            if self.step_in_epoch == self.steps_per_epoch:
                self.epoch, self.step_in_epoch, self._plan = self.epoch + 1, 0, None
        seconds = time.perf_counter() - started
        return {
            "loss": total / max(count, 1),
            "seconds": seconds,
            "pairs_per_second": pairs * self.world / seconds if seconds > 0 else 0.0,
        }

    def position(self) -> dict[str, int]:
        """Where training stands: the epoch under way, the step within it and the steps taken."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "steps": self.steps}

    def seek(self, position: dict[str, int]) -> None:
        """Continue from a ``position()`` (weights and optimiser are loaded separately)."""
        self.epoch, self.step_in_epoch, self.steps = (
            position["epoch"],
            position["step_in_epoch"],
            position["steps"],
        )
        self._plan = None

    def _epoch_plan(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """This rank's (users, positives, BPR negatives or None) for each step of ``epoch``."""
        order = torch.randperm(len(self.users), generator=torch.Generator().manual_seed(epoch * 1000 + 7))
        shard = order[self.rank :: self.world].to(self.device)
        users, positives = self.users[shard], self.items[shard]
        chunks = list(
            zip(
                users.tensor_split(self.steps_per_epoch),
                positives.tensor_split(self.steps_per_epoch),
                strict=True,
            )
        )
        if self.cf.loss != "bpr":
            return [(u, p, None) for u, p in chunks]
        generator = torch.Generator(device=self.device).manual_seed(epoch * 1000 + self.rank)
        per_pair = self.cf.bpr_negatives
        return [
            sample_bpr_triples(
                u.repeat_interleave(per_pair),
                p.repeat_interleave(per_pair),
                self.core.num_items,
                self.known,
                generator,
            )
            for u, p in chunks
        ]

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

        def rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return table.index_select(0, index)  # its backward is an index_add, twice as fast as t[index]'s

        if negatives is not None:
            return bpr_loss(
                rows(user_final, users),
                rows(item_final, positives),
                rows(item_final, negatives),
                rows(initial, users),
                rows(item0, positives),
                rows(item0, negatives),
                self.cf.l2,
            )
        shared = torch.randint(
            self.core.num_items, (self.cf.shared_negatives(self.core.num_items),), generator=generator
        ).to(self.device)
        return sampled_softmax_loss(
            rows(user_final, users),
            rows(item_final, positives),
            rows(item_final, shared),
            positives,
            shared,
            rows(initial, users),
            rows(item0, positives),
            self.cf.temperature,
            self.cf.l2,
        )


@dataclass
class Validation:
    """One validation point of a fit: where training stood, the score and what it decided."""

    step: int
    epoch: int
    loss: float
    trained_seconds: float
    pairs_per_second: float
    score: float
    best: float
    best_step: int
    gap_z: float
    improved: bool
    stop: bool
    reason: str
    lr: float

    def line(self) -> str:
        """One console line."""
        return (
            f"cf step {self.step} (epoch {self.epoch}): loss {self.loss:.4f}, "
            f"valid recall@20 {self.score:.4f} "
            f"(best {self.best:.4f} at step {self.best_step}), lr {self.lr:g}, {self.trained_seconds:.0f} s"
            + (f", stop: {self.reason}" if self.stop else "")
        )


class CFFit:
    """The training loop: chunks of ``cf.eval_every_steps`` steps, validation, early stopping, best weights.

    ``validate`` (None on ranks that do not validate) returns each validation user's Recall@20 for the
    model as it stands; ``agree`` makes every rank take rank 0's stop decision (identity on one worker).
    Stops on ``EarlyStopping``, on ``cf.epochs`` passes, after ``cf.max_steps`` steps or after
    ``cf.time_budget_s`` seconds of steps and validations (checked after every chunk, so inside an epoch
    too; ``on_validation``'s own time is not counted). The first ``cf.lr_decays`` plateaus that would end
    training decay the learning rate instead.
    """

    def __init__(
        self,
        trainer: CFTrainer,
        cf: CFConfig,
        validate: Callable[[], np.ndarray] | None,
        agree: Callable[[bool], bool] = lambda stop: stop,
    ) -> None:
        self.trainer, self.cf, self.validate, self.agree = trainer, cf, validate, agree
        self.stopping = EarlyStopping(cf.patience_steps, cf.min_steps, cf.stop_z, cf.renew_z)
        self.trained_seconds = 0.0
        self.best_model: dict[str, torch.Tensor] | None = None
        self.best_position = trainer.position()
        self.curve: list[dict[str, Any]] = []  # one entry per validation: what ``Validation`` says, as a dict
        self.lr_decays_done = 0

    def run(self, on_validation: Callable[[Validation], None]) -> None:
        """Train until a stop; ``on_validation`` sees every validation point (to report or checkpoint)."""
        while True:
            started = time.perf_counter()
            left = self.cf.epochs * self.trainer.steps_per_epoch - self.trainer.steps
            if self.cf.max_steps is not None:
                left = min(left, self.cf.max_steps - self.trainer.steps)
            stats = self.trainer.train_steps(max(1, min(self.cf.eval_every_steps, left)))
            position = self.trainer.position()
            score, improved = self._validate(position)
            self.trained_seconds += (
                time.perf_counter() - started
            )  # steps and validation: what a budget bounds
            reason = self._stop_reason(position)
            if self.agree(reason == "early stopping" and self.lr_decays_done < self.cf.lr_decays):
                self._decay_lr(position["steps"])
                reason = None
            point = Validation(
                step=position["steps"],
                epoch=position["epoch"] - (position["step_in_epoch"] == 0),
                loss=stats["loss"],
                trained_seconds=self.trained_seconds,
                pairs_per_second=stats["pairs_per_second"],
                score=score,
                best=self.stopping.best,
                best_step=self.stopping.best_step,
                gap_z=self.stopping.last_gap_z,
                improved=improved,
                stop=self.agree(reason is not None),
                reason=reason or "",
                lr=self.trainer.optimizer.param_groups[0]["lr"],
            )
            self.curve.append(asdict(point))
            on_validation(point)
            if point.stop:
                return

    def _validate(self, position: dict[str, int]) -> tuple[float, bool]:
        """(score, whether it is a new best) of the weights as they stand; keeps a copy of a new best."""
        if self.validate is None:
            return math.nan, False
        self.trainer.model.eval()
        per_user = self.validate()
        improved = self.stopping.update(position["steps"], per_user)
        if improved:
            self.best_model = {k: v.detach().cpu().clone() for k, v in self.trainer.core.state_dict().items()}
            self.best_position = position
        return (float(per_user.mean()) if len(per_user) else math.nan), improved

    def _decay_lr(self, step: int) -> None:
        """Multiply the learning rate by ``cf.lr_decay`` and give early stopping its patience again."""
        for group in self.trainer.optimizer.param_groups:
            group["lr"] *= self.cf.lr_decay
        self.lr_decays_done += 1
        self.stopping.restart(step)

    def _stop_reason(self, position: dict[str, int]) -> str | None:
        """Why training stops here, or None (rank 0's view; ``agree`` makes it everyone's)."""
        if self.cf.time_budget_s is not None and self.trained_seconds >= self.cf.time_budget_s:
            return "time budget"
        if position["epoch"] > self.cf.epochs:
            return f"{self.cf.epochs} epochs"
        if self.cf.max_steps is not None and position["steps"] >= self.cf.max_steps:
            return f"{self.cf.max_steps} steps"
        if self.validate is not None and self.stopping.should_stop(position["steps"]):
            return "early stopping"
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, position, stopping state and the best weights."""
        return {
            "model": self.trainer.core.state_dict(),
            "optimizer": self.trainer.optimizer.state_dict(),
            "position": self.trainer.position(),
            "stopping": self.stopping.state_dict(),
            "best_model": self.best_model,
            "best_position": self.best_position,
            "trained_seconds": self.trained_seconds,
            "curve": self.curve,
            "lr_decays_done": self.lr_decays_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict``'s output."""
        self.trainer.core.load_state_dict(state["model"])
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        self.trainer.seek(state["position"])
        self.stopping.load_state_dict(state["stopping"])
        self.best_model, self.best_position = state["best_model"], state["best_position"]
        self.trained_seconds, self.curve = state["trained_seconds"], state["curve"]
        self.lr_decays_done = state["lr_decays_done"]
