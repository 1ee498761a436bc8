"""Degenerate post text (what small models loop into), found and repaired before a post is rendered.

Seen in the demo's SmolLM2 posts: "Tina fiiiiiiiiiiiiiiii!(tina iiipriiiirriiuuuuuunnnnngggg!)", a body
that was only "The Daily Mail", and a 600-character body of words joined by underscores
("the_legolabelibrickmaker_jumbo_jeopardized_..."). ``problems`` names runs of one letter, run-on words, a
word n-gram repeated many times and a body shorter than its bound; ``repaired`` shortens runs and drops
repeats (a short body cannot be repaired, only written again).
"""

from __future__ import annotations

import re
from collections import Counter

RUN = re.compile(
    r"([^\W\d_])\1{3,}"
)  # a letter four or more times in a row ("fiiii"); no English word has one
RUN_ON = re.compile(r"(?:^|\s)(?!https?://)\S{30,}")  # 30 characters without a space, not a link
MIN_BODY_CHARS = 80
REPEATS = 4  # an n-gram (n <= 3 words) this many times, covering a third of the words
_WORDS = re.compile(r"\w+")


def problems(title: str, body: str, min_body_chars: int = MIN_BODY_CHARS) -> list[str]:
    """What is degenerate in a post: ``letter_run``, ``run_on_word``, ``repeated_ngram``, ``short_body`` (in
    that order)."""
    found = []
    text = f"{title}\n{body}"
    if RUN.search(text):
        found.append("letter_run")
    if RUN_ON.search(text):
        found.append("run_on_word")
    if _repeated_ngram(text) is not None:
        found.append("repeated_ngram")
    if len(body.strip()) < min_body_chars:
        found.append("short_body")
    return found


def _repeated_ngram(text: str) -> tuple[str, ...] | None:
    """The most repeated word n-gram (n = 1..3) when it repeats ``REPEATS`` times over a third of words."""
    words = [w.lower() for w in _WORDS.findall(text)]
    for n in (3, 2, 1):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if not grams:
            continue
        gram, count = grams.most_common(1)[0]
        if count >= REPEATS and count * n * 3 >= len(words):
            return gram
    return None


def repaired(text: str) -> str:
    """``text`` with letter runs cut to two letters and a phrase repeated back to back kept once."""
    text = RUN.sub(lambda m: m.group(1) * 2, text)
    return re.sub(r"\b((?:\w+\W+){1,3}?)(?:\1){2,}", r"\1", text)
