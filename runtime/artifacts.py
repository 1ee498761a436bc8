"""A run folder's artifacts: where each stage writes what later stages read, and the shared readers.

Stage modules (``jobs/<stage>.py``) never import one another; what one stage hands the next is named here:
the file or folder under ``RUN/<stage>/`` and, for the small tables every task of a stage looks up (item
cards, priors, item facts), a reader that puts them in the object store once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from models.embedding import CardVectors
from models.profiling.cohort_parts import CohortFiles
from models.profiling.drift import TasteSpread
from runtime.broadcast import broadcast_table

# RUN/cohort/
COHORT_USERS, COHORT_ITEMS, COHORT_COLD_START = "users.parquet", "items.parquet", "cold_start.parquet"
COHORT_FILES = CohortFiles(COHORT_USERS, COHORT_COLD_START, COHORT_ITEMS)
CAPTIONED_ITEMS = "items.parquet"  # RUN/captions/, a folder of Parquet files (one per block)
CATALOGUE_CLUSTERS = "clusters.parquet"  # RUN/catalogue/, a folder of Parquet files
CATALOGUE_ITEMS = "items.parquet"  # RUN/catalogue/: each clustered item's cluster
PRIORS = "items.parquet"  # RUN/priors/, a folder of Parquet files
PROFILES = "profile_v0.parquet"  # RUN/profiles/, a folder of Parquet files
COLD_START_PROFILES = "cold_start.parquet"  # RUN/profiles/: the cold-start users' profiles
REFINED = "profiles.parquet"  # RUN/refine/, a folder of Parquet files
FEEDBACK_EVIDENCE = "evidence.parquet"  # RUN/feedback/, a folder of Parquet files
POSTS = "posts.parquet"  # RUN/generate/, a folder of Parquet files
# Items per block of a catalogue read: blocks follow the catalogue's size, not the cluster's CPU count (a
# small catalogue split 2 x CPUs ways starts a worker process per sliver of it).
ITEMS_PER_BLOCK = 4096


def cards_ref(captions_dir: Path) -> Any:
    """The item cards of the captions stage (item_id, card), in the object store."""
    return broadcast_table(str((captions_dir / CAPTIONED_ITEMS).resolve()), ["item_id", "card"])


def priors_ref(priors_dir: Path) -> Any:
    """The priors stage's item priors (item_id, prior), in the object store."""
    return broadcast_table(str(priors_dir.resolve()), ["item_id", "prior"])


def item_facts(cohort_items: str, catalogue: str | None) -> pa.Table:
    """(item_id, title, tags, cluster): what a profile may name, for the cohort's items (cluster: the
    catalogue's taste-cluster label, null without a catalogue or for an unclustered item)."""
    items = pq.read_table(cohort_items, columns=["item_id", "title", "tags"])
    labels: list[str | None] = [None] * items.num_rows
    if catalogue is not None:
        members = pq.read_table(Path(catalogue) / CATALOGUE_ITEMS, columns=["item_id", "cluster"])
        named = pq.read_table(Path(catalogue) / CATALOGUE_CLUSTERS, columns=["cluster", "label"])
        label_of = dict(zip(named["cluster"].to_pylist(), named["label"].to_pylist(), strict=True))
        cluster_of = dict(zip(members["item_id"].to_pylist(), members["cluster"].to_pylist(), strict=True))
        labels = [label_of.get(cluster_of.get(item)) for item in items["item_id"].to_pylist()]
    return items.append_column("cluster", pa.array(labels, pa.string()))


def facts_ref(cohort: Path, catalogue: Path | None) -> Any:
    """``item_facts`` of a run, read by a task into the object store."""
    import ray

    task = ray.remote(item_facts).options(num_cpus=0.25)
    return task.remote(
        str((cohort / COHORT_ITEMS).resolve()), str(catalogue.resolve()) if catalogue else None
    )


def taste_spread(catalogue: str, cards: CardVectors) -> TasteSpread:
    """The catalogue stage's clusters as a drift meter: each cluster's most popular items are its probes."""
    members = pq.read_table(Path(catalogue) / CATALOGUE_ITEMS)
    cluster_of = dict(zip(members["item_id"].to_pylist(), members["cluster"].to_pylist(), strict=True))
    probes = pq.read_table(Path(catalogue) / CATALOGUE_CLUSTERS, columns=["items"])["items"]
    return TasteSpread(cards, cluster_of, probes.combine_chunks().flatten().to_pylist())


def write_cards_of(cards: str, items: str, out: str) -> str:
    """The (item_id, card) rows of ``cards`` whose item is in ``items`` (a Parquet of item ids), into
    ``out``; returns ``out``."""
    import pyarrow.compute as pc

    wanted = pq.read_table(items, columns=["item_id"])["item_id"]
    table = pq.read_table(cards, columns=["item_id", "card"])
    pq.write_table(table.filter(pc.is_in(table["item_id"], value_set=wanted.combine_chunks())), out)
    return out


def read_catalogue(items_path: str, columns: list[str] | None = None) -> Any:
    """The catalogue at ``items_path`` (those columns) as a Dataset of ``ITEMS_PER_BLOCK``-item blocks."""
    import pyarrow.dataset
    import ray.data

    rows = pyarrow.dataset.dataset(items_path, format="parquet").count_rows()
    blocks = max(1, -(-rows // ITEMS_PER_BLOCK))
    return ray.data.read_parquet(items_path, columns=columns, override_num_blocks=blocks)


ROWS_PER_PARTITION = 100_000


def hash_partitions(rows: int) -> int:
    """Hash partitions of a join or groupby over ``rows`` rows: one per 100,000 (Ray Data's default of 200
    is sized for terabytes; on a small node each of its partitions is a task)."""
    return max(1, -(-rows // ROWS_PER_PARTITION))


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or folder of files, from the files' metadata (no column is read)."""
    return sum(pq.read_metadata(file).num_rows for file in pq.ParquetDataset(path).files)
