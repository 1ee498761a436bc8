"""Synthetic TailorBench datasets with planted topics, power-law popularity and activity, streamed to disk."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from models.errors import TailorMindError

# Users generated and written at a time. Activity is Pareto-tailed, so a chunk's size (and the writer's
# peak) varies with its heaviest users: with 65,536 users a chunk the peak RSS went from 391 MB at 100k users
# to 458 MB at 1M (1.17x); with 16,384, 301 and 296 MB, and 1M users took 43 s against 48 s (AMD EPYC Zen 4).
USERS_PER_CHUNK = 16_384
TOPIC_WORDS = (
    "astronomy", "baking", "cycling", "jazz", "gardening", "chess", "surfing",
    "anime", "robotics", "poetry", "hiking", "photography", "coffee", "fashion",
    "history", "gaming", "yoga", "cinema", "sailing", "ceramics",
)  # fmt: skip
START_TIME = 1_600_000_000
TIME_SPAN = 3 * 365 * 24 * 3600


@dataclass(frozen=True)
class SynthSpec:
    """Size and shape of a synthetic dataset."""

    users: int
    items: int
    tags: int
    seed: int = 0
    interactions: int | None = None
    topics: int | None = None
    image_share: float = 0.05
    primary_share: float = 0.75
    secondary_share: float = 0.2

    @property
    def num_topics(self) -> int:
        """Planted topics: given, else one per 2,000 items between 4 and 50."""
        return self.topics or int(np.clip(self.items // 2000, 4, 50))

    @property
    def num_interactions(self) -> int:
        """Target interaction count (before removing repeated user-item pairs)."""
        return self.interactions or 20 * self.users


def write_synthetic(spec: SynthSpec, out: Path) -> dict[str, int]:
    """Write items, interactions and users Parquet (and placeholder PNGs); returns the row counts."""
    _check(spec)
    out.mkdir(parents=True, exist_ok=True)
    catalogue = _Catalogue.build(spec)
    pq.write_table(catalogue.items_table(spec, out), out / "items.parquet")
    interactions = 0
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64())])
    with (
        pq.ParquetWriter(out / "interactions.parquet", schema) as inter_writer,
        pq.ParquetWriter(out / "users.parquet", pa.schema([("user_id", pa.string())])) as user_writer,
    ):
        for chunk, first in enumerate(range(0, spec.users, USERS_PER_CHUNK)):
            count = min(USERS_PER_CHUNK, spec.users - first)
            rng = np.random.default_rng([spec.seed, 1, chunk])
            user, item, timestamp = _chunk_interactions(spec, catalogue, rng, first, count)
            inter_writer.write_table(
                pa.table(
                    {"user_id": _ids("u", user), "item_id": _ids("i", item), "timestamp": timestamp}, schema
                )
            )
            user_writer.write_table(pa.table({"user_id": _ids("u", np.arange(first, first + count))}))
            interactions += len(user)
    return {"users": spec.users, "items": spec.items, "interactions": interactions}


def _check(spec: SynthSpec) -> None:
    problems = []
    if spec.users < 1 or spec.items < 2 or spec.tags < 1:
        problems.append("users, items and tags must be positive (items at least 2)")
    if spec.num_topics > spec.items:
        problems.append(f"{spec.num_topics} topics need at least as many items")
    if not 0 <= spec.image_share <= 1:
        problems.append("the image share must be between 0 and 1")
    if spec.num_interactions < 3 * spec.users:
        problems.append("ask for at least 3 interactions per user so every user can hold out valid and test")
    if problems:
        raise TailorMindError("cannot generate this synthetic dataset: " + "; ".join(problems) + ".")


def _ids(prefix: str, index: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(index).cast(pa.string()), "")


@dataclass(frozen=True)
class _Catalogue:
    """Items with a topic each, a popularity weight, and a sampler from topic to item."""

    topic: np.ndarray
    cdf: np.ndarray  # topic + cumulative within-topic popularity, items ordered by topic
    order: np.ndarray  # item index at each cdf position
    tags: np.ndarray  # [items, 3] tag indices, -1 where a repeat was dropped

    @classmethod
    def build(cls, spec: SynthSpec) -> _Catalogue:
        rng = np.random.default_rng([spec.seed, 0])
        k = spec.num_topics
        topic = np.concatenate([np.arange(k), rng.integers(0, k, spec.items - k)])
        rng.shuffle(topic)
        popularity = 1.0 / (1.0 + rng.permutation(spec.items)) ** 0.9
        order = np.lexsort((np.arange(spec.items), topic))
        weights = popularity[order]
        topic_sorted = topic[order]
        starts = np.searchsorted(topic_sorted, np.arange(k))
        totals = np.add.reduceat(weights, starts)
        within = np.cumsum(weights) - np.repeat(
            np.cumsum(totals) - totals, np.diff(np.r_[starts, spec.items])
        )
        cdf = topic_sorted + within / np.repeat(totals, np.diff(np.r_[starts, spec.items]))
        tags_of_topic = rng.integers(0, spec.tags, size=(k, max(3, spec.tags // k)))
        own = tags_of_topic[topic[:, None], rng.integers(0, tags_of_topic.shape[1], size=(spec.items, 3))]
        noise = rng.integers(0, spec.tags, size=spec.items)
        use_noise = rng.random(spec.items) < 0.2
        tags = np.where(use_noise, noise, own[:, 2])
        per_item = np.sort(np.stack([own[:, 0], own[:, 1], tags], axis=1), axis=1)
        per_item[:, 1:][per_item[:, 1:] == per_item[:, :-1]] = -1
        return cls(topic=topic, cdf=cdf, order=order, tags=per_item)

    def items_table(self, spec: SynthSpec, out: Path) -> pa.Table:
        words = np.array([TOPIC_WORDS[t % len(TOPIC_WORDS)] + ("" if t < len(TOPIC_WORDS) else f"-{t}")
                          for t in range(spec.num_topics)], dtype=object)  # fmt: skip
        index = np.arange(spec.items)
        item_ids = _ids("i", index)
        topic_words = pa.array(words[self.topic].tolist(), pa.string())
        titles = pc.binary_join_element_wise(
            "Item ", pa.array(index).cast(pa.string()), " about ", topic_words, ""
        )
        text = pc.binary_join_element_wise(
            "A post about ", topic_words, " for fans of ", topic_words, ".", ""
        )
        tag_names = pc.binary_join_element_wise("tag", pa.array(np.arange(spec.tags)).cast(pa.string()), "")
        present = self.tags >= 0
        tags = _list_array(present, tag_names.take(pa.array(self.tags[present])))
        has_image = self._write_images(spec, out)
        image_paths = pc.binary_join_element_wise(
            "images/i", pa.array(np.flatnonzero(has_image)).cast(pa.string()), ".png", ""
        )
        image_uris = _list_array(has_image[:, None], image_paths)
        return pa.table(
            {
                "item_id": item_ids,
                "title": titles,
                "text": text,
                "tags": tags,
                "image_uris": image_uris,
                "video_uris": pa.array([[]] * spec.items, pa.list_(pa.string())),
            }
        )

    def _write_images(self, spec: SynthSpec, out: Path) -> np.ndarray:
        """Topic-coloured 32x32 PNGs with seeded noise for a share of the items; returns which have one."""
        rng = np.random.default_rng([spec.seed, 2])
        has_image = rng.random(spec.items) < spec.image_share
        chosen = np.flatnonzero(has_image)
        if not len(chosen):
            return has_image
        (out / "images").mkdir(exist_ok=True)
        palette = np.random.default_rng([spec.seed, 3]).integers(40, 216, size=(spec.num_topics, 3))
        noise = rng.integers(-30, 31, size=(len(chosen), 32, 32, 3))
        pixels = np.clip(palette[self.topic[chosen]][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        for item, picture in zip(chosen, pixels, strict=True):
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="PNG", optimize=False)
            (out / "images" / f"i{item}.png").write_bytes(buffer.getvalue())
        return has_image


def _list_array(present: np.ndarray, values: pa.Array) -> pa.Array:
    """List array whose row ``r`` holds the values where ``present[r]`` is true, in row-major order."""
    offsets = np.r_[0, np.cumsum(present.sum(axis=1))].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _chunk_interactions(spec: SynthSpec, cat: _Catalogue, rng: np.random.Generator, first: int, count: int):
    """Interactions of users ``first .. first+count``: topic mixtures, Pareto activity, time-ordered."""
    k = spec.num_topics
    mean = spec.num_interactions / spec.users
    activity = rng.pareto(2.0, count) + 1.0
    per_user = np.maximum(3, np.round(activity * mean / 2.0)).astype(np.int64)
    per_user = np.minimum(per_user, spec.items // 2 if spec.items >= 6 else spec.items)
    user = np.repeat(np.arange(first, first + count), per_user)
    primary, secondary = rng.integers(0, k, count), rng.integers(0, k, count)
    pick = rng.random(len(user))
    topic = np.where(
        pick < spec.primary_share,
        primary[user - first],
        np.where(
            pick < spec.primary_share + spec.secondary_share,
            secondary[user - first],
            rng.integers(0, k, len(user)),
        ),
    )
    position = np.searchsorted(cat.cdf, topic + rng.random(len(user)), side="right").clip(max=spec.items - 1)
    item = cat.order[position]
    keys = np.unique(user * spec.items + item)
    user, item = keys // spec.items, keys % spec.items
    timestamp = START_TIME + rng.integers(0, TIME_SPAN, len(user))
    return user, item, timestamp
