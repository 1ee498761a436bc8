"""The ten idea templates of TailorMind's ideation step, as data."""

from __future__ import annotations

IDEA_TEMPLATES: dict[str, str] = {
    "News Updates": "timely news or recent developments on a topic the user follows",
    "Deep Analysis": "an in-depth breakdown of why something works, with evidence",
    "Lifestyle Guides": "practical advice for fitting the interest into everyday life",
    "Product Reviews": "an honest review of a specific product, title or experience",
    "Community Discussion": "a question or prompt that invites fans to share their views",
    "Tutorial Guides": "step-by-step instructions to learn or make something",
    "Collection Lists": "a curated list of recommendations around one theme",
    "Opinion Posts": "a clear personal stance on a debated topic",
    "Interactive Posts": "a poll, quiz or challenge for the audience",
    "Story Content": "a narrative or anecdote that carries the theme",
}
