"""Degenerate post text (what small models loop into), found and repaired before a post is rendered.

Seen in the demo's SmolLM2 posts: "Tina fiiiiiiiiiiiiiiii!(tina iiipriiiirriiuuuuuunnnnngggg!)", a body
that was only "The Daily Mail", and a 600-character body of words joined by underscores
("the_legolabelibrickmaker_jumbo_jeopardized_..."), a body that said one 14-word sentence six times, a
body of template slots ("{{#nominal}}{{author}} - {{genre}}"), and the tags "', '" and "], '".
``problems`` names runs of one letter, run-on words, unfilled template slots, a word n-gram or a phrase
repeated many times and a body shorter than its bound; ``repaired`` shortens runs and drops repeats (a short
body cannot be repaired, only written again); ``cleaned_tags`` drops tags without a word.
"""

from __future__ import annotations

import re
from collections import Counter

RUN = re.compile(
    r"([^\W\d_])\1{3,}"
)  # a letter four or more times in a row ("fiiii"); no English word has one
RUN_ON = re.compile(r"(?:^|\s)(?!https?://)\S{30,}")  # 30 characters without a space, not a link
SLOT = re.compile(r"\{\{|\}\}|\{[#/]?\w*\}")  # an unfilled template slot: "{{author}}", "{#2}", "{}"
MIN_BODY_CHARS = 80
REPEATS = 4  # an n-gram (n <= 3 words) this many times, covering a third of the words
PHRASE_WORDS, PHRASE_REPEATS = 6, 3  # a 6-word phrase three times: no post says one sentence thrice
_WORDS = re.compile(r"\w+")
_EDGES = re.compile(r"^\W+|\W+$")


def problems(title: str, body: str, min_body_chars: int = MIN_BODY_CHARS) -> list[str]:
    """What is degenerate in a post: ``letter_run``, ``run_on_word``, ``template_slot``, ``repeated_ngram``,
    ``short_body`` (in that order)."""
    found = []
    text = f"{title}\n{body}"
    if RUN.search(text):
        found.append("letter_run")
    if RUN_ON.search(text):
        found.append("run_on_word")
    if SLOT.search(text):
        found.append("template_slot")
    if _repeated_ngram(text) is not None:
        found.append("repeated_ngram")
    if len(body.strip()) < min_body_chars:
        found.append("short_body")
    return found


def _repeated_ngram(text: str) -> tuple[str, ...] | None:
    """A 6-word phrase repeated ``PHRASE_REPEATS`` times, else the most repeated word n-gram (n = 1..3) when
    it repeats ``REPEATS`` times over a third of words."""
    words = [w.lower() for w in _WORDS.findall(text)]
    phrases = Counter(tuple(words[i : i + PHRASE_WORDS]) for i in range(len(words) - PHRASE_WORDS + 1))
    if phrases and phrases.most_common(1)[0][1] >= PHRASE_REPEATS:
        return phrases.most_common(1)[0][0]
    for n in (3, 2, 1):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if not grams:
            continue
        gram, count = grams.most_common(1)[0]
        if count >= REPEATS and count * n * 3 >= len(words):
            return gram
    return None


def repaired(text: str) -> str:
    """``text`` with letter runs cut to two letters and a phrase (up to 20 words) repeated back to back
    three or more times kept once."""
    text = RUN.sub(lambda m: m.group(1) * 2, text)
    return re.sub(r"\b((?:\w+\W+){1,20}?)(?:\1){2,}", r"\1", text)


def cleaned_tags(tags: list[str]) -> list[str]:
    """Tags stripped of punctuation at their edges, those without a letter or digit dropped, repeats once:
    SmolLM2 has answered the tags "', '" and "], '"."""
    kept: list[str] = []
    for tag in tags:
        tag = _EDGES.sub("", tag.strip())
        if tag and tag.lower() not in (k.lower() for k in kept):
            kept.append(tag)
    return kept
