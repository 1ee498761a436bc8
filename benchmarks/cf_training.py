"""CF training speed: the propagation kernel (edge-list scatter vs sparse CSR) and Ray Train epochs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch_geometric.nn import LGConv

from benchmarks.cf_quality import MOVIELENS
from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot, best_of
from jobs.cf import train
from models.cf import HypergraphCF, build_hypergraph
from models.cf.inputs import cf_inputs
from models.config import load_config
from models.data import load_dataset, write_dataset
from models.data.movielens import import_movielens
from models.data.synth import SynthSpec, write_synthetic


def _propagation_seconds(model: HypergraphCF, graph, sparse: bool) -> float:
    conv = LGConv(normalize=False)

    def step() -> None:
        x = total = model.embedding.weight
        for _ in range(model.layers):
            x = conv(x, graph.sparse_adjacency()) if sparse else conv(x, graph.edge_index, graph.edge_weight)
            total = total + x
        total.sum().backward()

    step()
    return best_of(step, repeats=3)


def run(quick: bool = False) -> BenchResult:
    """Kernel timings and Ray Train epochs with 1 and 2 workers on MovieLens-small and a synthetic set."""
    result = BenchResult("cf_training")
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {"movielens-small": Path(tmp) / "ml", "synthetic": Path(tmp) / "synth"}
        write_dataset(import_movielens(MOVIELENS), datasets["movielens-small"])
        users = 10_000 if quick else 100_000
        write_synthetic(SynthSpec(users=users, items=users // 5, tags=200, seed=0), datasets["synthetic"])
        labels, values = [], []
        for name, path in datasets.items():
            inputs = cf_inputs(load_dataset(path), seed=0)
            graph = build_hypergraph(inputs.train, inputs.item_index, inputs.tag_index, inputs.num_tags)
            model = HypergraphCF(graph.num_users, graph.num_tags, graph.num_items, 64, 3)
            scatter = _propagation_seconds(model, graph, sparse=False)
            sparse = _propagation_seconds(model, graph, sparse=True)
            result.add(
                dataset=name,
                measure="propagation fwd+bwd (3 layers, dim 64)",
                edges=graph.edge_index.shape[1],
                edge_list_seconds=scatter,
                sparse_csr_seconds=sparse,
                speedup=scatter / sparse,
            )
            labels.append(f"{name}\nCSR vs edge list")
            values.append(scatter / sparse)
            one = None
            for workers, cpus in ((1, 1), (1, 2), (2, 1)):
                batch = 4096 if name == "movielens-small" else 65536  # large graphs need large batches
                overrides = [
                    f"cf.num_workers={workers}",
                    f"cf.cpus_per_worker={cpus}",
                    "cf.epochs=2",
                    f"cf.batch_size={batch}",
                ]
                config = load_config(None, overrides)
                metrics = train(str(path), Path(tmp) / f"{name}-{workers}-{cpus}", config)
                one = one or metrics["pairs_per_second"]
                result.add(
                    dataset=name,
                    measure="Ray Train steps",
                    workers=workers,
                    cpus_per_worker=cpus,
                    pairs=int(inputs.train.nnz),
                    pairs_per_second=metrics["pairs_per_second"],
                    speedup_vs_1_worker_1_cpu=metrics["pairs_per_second"] / one,
                )
                labels.append(f"{name}\n{workers} worker(s) x {cpus} CPU")
                values.append(metrics["pairs_per_second"] / one)
    bar_plot(RESULTS_DIR / "cf_training.png", "CF training speed-ups (same run)", labels, values, "ratio")
    result.notes.append("a worker's torch threads = its cpus_per_worker; 2 workers share the same cores here")
    return result
