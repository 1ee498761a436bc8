"""Grounded profiles and degenerate text: what a small model may say, and what it got wrong."""

from __future__ import annotations

import jsonschema

from models.degenerate import cleaned_tags, problems, repaired
from models.llm.prompts import PROFILE
from models.profiling.grounding import (
    Vocabulary,
    degeneracies,
    grounded_preferences,
    named,
    preferences_schema,
    vocabulary,
)

TITLES = {"1": "Toy Story (1995)", "2": "Heat (1995)", "3": "Alien (1979)"}
TAGS = {"1": ["animation", "comedy"], "2": ["crime", "drama"], "3": ["horror", "sci-fi", "drama"]}


def test_a_users_vocabulary_is_their_own_tags_clusters_and_titles_most_frequent_first():
    words = vocabulary(["3", "2", "1"], TITLES, TAGS, {"3": "Space", "1": None})
    assert words.preferences[0] == "drama" and set(words.preferences) == {
        "animation",
        "comedy",
        "crime",
        "drama",
        "horror",
        "sci-fi",
        "Space",
    }
    assert words.titles == ["Alien (1979)", "Heat (1995)", "Toy Story (1995)"]
    assert words.holders["crime"] == ["Heat (1995)"] and words.holders["drama"] == [
        "Alien (1979)",
        "Heat (1995)",
    ]
    assert Vocabulary.from_json(words.to_json()) == words


def test_the_schema_only_admits_the_users_words_and_at_least_two_preferences():
    words = vocabulary(["3", "2"], TITLES, TAGS)
    schema = preferences_schema(words, PROFILE.schema)
    good = {
        "preferences": [
            {"preference": "drama", "reason": "Heat (1995)"},
            {"preference": "horror", "reason": "Alien (1979)"},
        ]
    }
    jsonschema.validate(good, schema)
    for bad in (
        {"preferences": [{"preference": "Drama (genre)", "reason": "Heat (1995)"}, good["preferences"][1]]},
        {"preferences": [{"preference": "drama", "reason": "genre-wise"}, good["preferences"][1]]},
        # a reason must be an item that carries its preference: Heat is no horror film
        {"preferences": [good["preferences"][0], {"preference": "horror", "reason": "Heat (1995)"}]},
        {"preferences": good["preferences"][:1]},
    ):
        try:
            jsonschema.validate(bad, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"accepted {bad}")
    assert (
        preferences_schema(Vocabulary([], [], {}), PROFILE.schema) is PROFILE.schema
    )  # nothing to ground in


def test_repeats_are_dropped_and_a_second_preference_is_filled_from_the_users_items():
    words = vocabulary(["3", "2"], TITLES, TAGS)
    repeated = [{"preference": "drama", "reason": "Heat (1995)"}] * 4  # what SmolLM2 wrote for user 38
    assert degeneracies(repeated) == ["fewer_than_2", "repeated_preference"]
    fixed, filled = grounded_preferences(repeated, words)
    assert filled and [p["preference"] for p in fixed] == ["drama", words.preferences[1]]
    assert degeneracies(fixed) == []
    assert (
        degeneracies([{"preference": "genre-wise", "reason": "genre-wise"}] * 2)[-1] == "reason_is_preference"
    )
    assert "non_english" in degeneracies(
        [{"preference": "愛情", "reason": "映画"}, {"preference": "x", "reason": "y"}]
    )


def test_degenerate_posts_from_the_demo_are_caught_and_runs_repaired():
    tina = "Tina fiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii!(tina iiipriiiirriiuuuuuunnnnngggg!)"
    assert problems("A post", f"{tina} she sang, and the crowd cheered until the lights went out.") == [
        "letter_run",
        "run_on_word",
    ]
    lego = "the_legolabelibrickmaker_jumbo_jeopardized_bobby_lampopendercolor_reproduction_movies_opener"
    assert problems("The Lego Movie 2", f"{lego} fantasy scary grizzly cute ninja") == ["run_on_word"]
    link = "Read more at https://example.com/reviews/the-lego-movie-2-the-second-part-2019 tonight."
    assert problems("Lego", f"A sequel about building worlds together, with songs. {link}") == []
    assert problems("Daily", "The Daily Mail") == ["short_body"]
    loop = "watch this film " * 12
    assert problems("Loop", loop) == ["repeated_ngram"]
    assert (
        problems(
            "Heat", "A tense crime drama about a detective and a thief, shot across Los Angeles at night."
        )
        == []
    )
    assert "iiii" not in repaired(tina) and repaired("so so so so good") == "so good"
    slots = "{{#nominal}}{{author}} - {{genre}} - {{category}} - {{styleref}}}"  # user 599's body
    assert problems("Drama", f"The movie, {slots}, for every drama lover out there tonight.") == [
        "template_slot"
    ]
    assert problems("Superman", "A comic book featuring superhero action, #1}Monster of the Year {#2}") == [
        "template_slot",
        "short_body",
    ]
    assert (
        problems(
            "Sets", "A set {like this one} is fine: braces around words are no template slot, and no loop."
        )
        == []
    )


def test_a_sentence_said_over_and_over_and_tags_without_words_are_caught():
    """The demo's SmolLM2 post body that said one sentence six times, and its tags "', '" and "], '"."""
    sentence = "This Day in History: How to Make a Perfect Sunset at 4 PM on January 3rd | "
    body = sentence * 6
    assert problems("Sunset", body) == ["repeated_ngram"]
    assert repaired(body).strip() == sentence.strip()
    essay = (
        "A quiet drama about two brothers who run a bakery in Lyon, told over one long winter. "
        "The brothers argue about bread, about their father and about leaving; the bakery stays."
    )
    assert problems("Bakery", essay) == [] and repaired(essay) == essay
    assert cleaned_tags([", ", "], ", "sunset", " #Sunset ", "makeup"]) == ["sunset", "makeup"]


def test_named_finds_a_users_genres_and_titles_as_whole_words():
    words = Vocabulary(["Comedy", "sci-fi"], ["Heat (1995)", "Up (2009)"], {})
    assert named("Loves COMEDY and heat; sci-fi too", words) == ["Comedy", "sci-fi", "Heat"]
    assert named("a comedic, upbeat profile", words) == []  # parts of words do not count
    assert named("Heat", words, titles=False) == []
