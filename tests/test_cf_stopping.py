"""Early stopping in steps with a noise rule, and the CF training loop that keeps the best weights."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from models.cf import build_hypergraph
from models.cf.stopping import EarlyStopping
from models.cf.trainer import CFFit, CFTrainer, Validation, cf_model
from models.config import CFConfig


def _users(mean: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-user hits (0/1) of ``n`` validation users with hit rate ``mean``."""
    return (rng.random(n) < mean).astype(np.float64)


def _moved(hits: np.ndarray, lost: int, gained: int, rng: np.random.Generator) -> np.ndarray:
    """``hits`` with ``lost`` random hits turned into misses and ``gained`` misses into hits."""
    out = hits.copy()
    out[rng.choice(np.flatnonzero(hits == 1), lost, replace=False)] = 0
    out[rng.choice(np.flatnonzero(hits == 0), gained, replace=False)] = 1
    return out


def test_a_dip_within_noise_waits_twice_the_patience_but_a_real_decline_stops_at_once():
    """600 validation users (MovieLens): validations 3 hits below the best (5 users moved) are within the
    noise of a paired comparison, so training goes on past the patience, and ends only at twice it; losing a
    third of the hits ends it as soon as the best is the patience old."""
    rng = np.random.default_rng(0)
    best = _users(0.1, 600, rng)
    stopping = EarlyStopping(patience_steps=300, min_steps=0)
    stopping.update(100, best)
    for step in range(200, 700, 100):
        assert not stopping.update(step, _moved(best, 4, 1, rng))
        assert stopping.last_gap_z < 2 and not stopping.should_stop(step)
    stopping.update(700, _moved(best, 4, 1, rng))
    assert stopping.should_stop(700)  # a plateau: the best is twice the patience old
    declined = EarlyStopping(patience_steps=300, min_steps=0)
    declined.update(100, best)
    declined.update(400, _moved(best, int(best.sum()) // 3, 0, rng))
    assert declined.last_gap_z > 2 and declined.should_stop(400)


def test_a_creep_of_new_bests_within_noise_does_not_keep_training_going():
    """Each validation gains one user's hit over the last, net (5 gained, 4 lost: new bests, kept), but none
    is beyond noise of the best that last restarted the patience clock, so a plateau still ends at twice the
    patience; a real gain restarts the clock."""
    rng = np.random.default_rng(2)
    hits = _users(0.1, 600, rng)
    stopping = EarlyStopping(patience_steps=300, min_steps=0)
    stopping.update(100, hits)
    for step in range(200, 700, 100):
        hits = _moved(hits, 4, 5, rng)
        assert stopping.update(step, hits) and stopping.best_step == step
        assert stopping.clock_from == 100 and not stopping.should_stop(step)
    hits = _moved(hits, 4, 5, rng)
    assert stopping.update(700, hits) and stopping.should_stop(700)
    renewed = EarlyStopping(patience_steps=300, min_steps=0)
    renewed.update(100, hits)
    renewed.update(200, _moved(hits, 0, 30, rng))
    assert renewed.clock_from == 200 and not renewed.should_stop(500)


def test_neither_a_young_best_nor_a_short_run_stops():
    rng = np.random.default_rng(1)
    good = _users(0.3, 500, rng)
    stopping = EarlyStopping(patience_steps=500, min_steps=2000)
    stopping.update(100, good)
    stopping.update(400, np.zeros(500))
    assert stopping.last_gap_z > 2 and not stopping.should_stop(400)  # the best is only 300 steps old
    stopping.update(1500, np.zeros(500))
    assert not stopping.should_stop(1500)  # below min_steps
    stopping.update(2000, np.zeros(500))
    assert stopping.should_stop(2000)


def _tiny_graph():
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((40, 60)) < 0.2).astype(np.float32))
    return train, build_hypergraph(train, np.zeros(0, np.int32), np.zeros(0, np.int32), 0, use_tags=False)


def test_training_goes_through_a_planted_dip_and_keeps_the_weights_after_it():
    """Validation falls for several validations after the first, then rises above it: training must not
    stop in the dip, and the kept weights are those of the best validation after it."""
    train, graph = _tiny_graph()
    cf = CFConfig(
        dim=8, layers=1, batch_size=100, eval_every_steps=5, min_steps=40, patience_steps=30, epochs=1000
    )
    torch.manual_seed(0)
    trainer = CFTrainer(cf_model(graph, cf), graph, train, cf)
    users = 300
    curve = [0.20, 0.15, 0.12, 0.10, 0.11, 0.13, 0.18, 0.24, 0.26, 0.25] + [0.10] * 20  # per validation
    rng = np.random.default_rng(0)
    calls: list[int] = []

    def validate() -> np.ndarray:
        calls.append(trainer.steps)
        hits = np.zeros(users)
        hits[rng.permutation(users)[: round(curve[len(calls) - 1] * users)]] = 1.0
        return hits

    fit = CFFit(trainer, cf, validate)
    points: list[Validation] = []
    fit.run(points.append)
    assert [p.step for p in points][:3] == [5, 10, 15]
    assert fit.best_position["steps"] == 45  # the 0.26 validation, after the dip
    assert points[-1].stop and points[-1].reason == "early stopping"
    assert points[-1].step >= 45 + cf.patience_steps and points[-1].step >= cf.min_steps
    kept = fit.best_model
    assert kept is not None and not torch.equal(kept["embedding.weight"], trainer.core.embedding.weight)


def test_the_first_plateau_decays_the_learning_rate_and_the_next_one_stops():
    train, graph = _tiny_graph()
    cf = CFConfig(
        dim=8,
        layers=1,
        batch_size=100,
        eval_every_steps=5,
        min_steps=0,
        patience_steps=10,
        epochs=1000,
        lr_decays=1,
    )
    trainer = CFTrainer(cf_model(graph, cf), graph, train, cf)
    curve = iter([0.1, 0.3] + [0.3] * 4 + [0.6] + [0.6] * 10)  # plateau, a real gain, plateau

    def validate() -> np.ndarray:
        hits = np.zeros(400)
        hits[: round(next(curve) * 400)] = 1.0
        return hits

    points: list[Validation] = []
    CFFit(trainer, cf, validate).run(points.append)
    lrs = [p.lr for p in points]
    decayed = lrs.index(cf.lr * cf.lr_decay)  # the plateau that would have stopped training
    assert points[decayed].step == 10 + 2 * cf.patience_steps and not points[decayed].stop
    assert set(lrs[:decayed]) == {cf.lr} and set(lrs[decayed:]) == {cf.lr * cf.lr_decay}
    assert points[-1].reason == "early stopping" and points[-1].step == 35 + 2 * cf.patience_steps
    assert trainer.optimizer.param_groups[0]["lr"] == cf.lr * cf.lr_decay


def test_a_time_budget_ends_training_inside_an_epoch():
    train, graph = _tiny_graph()
    cf = CFConfig(dim=8, layers=1, batch_size=10, eval_every_steps=3, time_budget_s=1e-9)
    trainer = CFTrainer(cf_model(graph, cf), graph, train, cf)
    assert trainer.steps_per_epoch > 3
    points: list[Validation] = []
    CFFit(trainer, cf, lambda: np.ones(4)).run(points.append)
    assert len(points) == 1 and points[0].reason == "time budget" and points[0].step == 3


def test_the_epoch_cap_ends_training_on_its_last_step():
    train, graph = _tiny_graph()
    cf = CFConfig(dim=8, layers=1, batch_size=100, eval_every_steps=7, epochs=2)
    trainer = CFTrainer(cf_model(graph, cf), graph, train, cf)
    points: list[Validation] = []
    CFFit(trainer, cf, None).run(points.append)
    assert points[-1].reason == "2 epochs" and points[-1].step == 2 * trainer.steps_per_epoch
    assert points[-1].epoch == 2


def test_a_step_cap_ends_training_on_that_step_inside_an_epoch():
    train, graph = _tiny_graph()
    cf = CFConfig(dim=8, layers=1, batch_size=10, eval_every_steps=3, max_steps=5)
    trainer = CFTrainer(cf_model(graph, cf), graph, train, cf)
    assert trainer.steps_per_epoch > 5
    points: list[Validation] = []
    CFFit(trainer, cf, lambda: np.ones(4)).run(points.append)
    assert [p.step for p in points] == [3, 5] and points[-1].reason == "5 steps"
