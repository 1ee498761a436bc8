"""The safety gate: blocked terms, the judge's policy verdict, the image checker, rewrites and refusals."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import load_config
from models.embedding import TextEmbedder
from models.errors import TailorMindError
from models.generation.diffusion import ImageGenerator
from models.generation.pages import write_post
from models.generation.safety import SafetyGate, blocked_term_pattern, blocked_terms_in
from models.generation.writer import GenerationStopped, PostWriter, UserBrief
from models.llm.structured import LLMAnswer
from models.scoring.clip_score import CLIPScorer
from models.scoring.safety_checker import ImageSafetyChecker


def test_blocked_terms_match_whole_words_in_any_case_and_width():
    pattern = blocked_term_pattern(["gore", "bad word"])
    assert blocked_terms_in("So much GORE here", pattern) == ["gore"]
    assert blocked_terms_in("a Bad \n word", pattern) == ["bad word"]  # any whitespace inside a phrase
    full_width = "a bad word, then ｇｏｒｅ"
    assert blocked_terms_in(full_width, pattern) == ["bad word", "gore"]
    assert blocked_terms_in("Gorey and gorgeous", pattern) == []  # inside other words
    assert blocked_term_pattern([]) is None and blocked_terms_in("gore", None) == []
    with pytest.raises(TailorMindError, match="blank"):
        load_config(None, ["generation.safety.blocked_terms=[' ']"])


def test_image_checker_agrees_with_diffusers_and_sensitivity_moves_the_threshold(tiny_models):
    noise = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), np.uint8) for i in range(6)]
    images = [Image.fromarray(pixels) for pixels in noise]
    checker = ImageSafetyChecker("tiny://safety")
    assert not checker.unsafe(images).any()  # thresholds of 1: ordinary images pass
    assert ImageSafetyChecker("tiny://safety", sensitivity=2.0).unsafe(images).all()
    model = checker.model
    pixels = checker.processor(images=images, return_tensors="pt")["pixel_values"]
    embeds = torch.nn.functional.normalize(model.visual_projection(model.vision_model(pixels)[1]), dim=-1)
    cosine = embeds @ torch.nn.functional.normalize(model.concept_embeds, dim=-1).T
    with torch.no_grad():  # thresholds between the images' scores: some are flagged, some not
        model.concept_embeds_weights.copy_(cosine.max(dim=0).values - 1e-3)
        model.concept_embeds_weights[0] = cosine[:, 0].median()
    ours = checker.unsafe(images)
    _, theirs = model(pixels, [np.zeros((2, 2, 3)) for _ in images])
    assert ours.tolist() == theirs and 0 < ours.sum() < len(images)


class ScriptedLLM:
    """Answers each step from a script and records every request (the safety gate's role included)."""

    def __init__(self, drafts: list[dict], verdicts: list[str], ideas: list[str] | None = None):
        self.drafts, self.verdicts, self.requests = list(drafts), list(verdicts), []
        self.ideas = list(ideas or [])

    def __call__(self, requests, role):
        self.requests.append((role, requests))
        name = requests[0]["schema"]["properties"]
        if role == "judge":
            value = {"verdict": self.verdicts.pop(0), "reason": "graphic violence in the body"}
        elif "styles" in name:
            value = {"styles": ["Story Content"]}
        elif "idea" in name:
            value = {"idea": self.ideas.pop(0) if self.ideas else "a night at the cinema"}
        else:
            value = self.drafts.pop(0)
        return {r["row_key"]: LLMAnswer(r["row_key"], value, None, 1) for r in requests}


class RecordingImages:
    """The tiny Stable Diffusion pipeline, recording the (prompt, seed) pairs it renders."""

    def __init__(self):
        self.model = ImageGenerator("tiny://sd", steps=2, height=32, width=32)
        self.calls = []

    def generate(self, prompts, seeds, references=None):
        self.calls.append(list(zip(prompts, seeds, strict=True)))
        return self.model.generate(prompts, seeds, references)


class FlagFirstCall:
    """An image checker that flags every image of its first call, then none."""

    def __init__(self):
        self.calls = 0

    def unsafe(self, images):
        self.calls += 1
        return np.full(len(images), self.calls == 1)


def _draft(body: str) -> dict:
    """A post whose body is long enough not to count as degenerate (and be asked for again)."""
    body += ": the city lights, the crowd at the door, and the film everyone talked about for weeks."
    return {"title": "Night", "body": body, "tags": ["film"], "image_prompts": ["a cinema at night"]}


def _writer(llm, images, gate, rewrites=2):
    return PostWriter(
        complete=llm,
        images=images,
        scorer=CLIPScorer("tiny://clip"),
        embedder=TextEmbedder(),
        reflection_rounds=0,
        safety=gate,
        safety_rewrites=rewrites,
    )


BRIEF = UserBrief("u1", "1. thrillers (watches them late)", ["Heat | crime"], ["Heat | crime"])


def test_a_flagged_draft_is_rewritten_with_the_reason_and_never_shown(tiny_models, tmp_path):
    llm = ScriptedLLM([_draft("a night of GORE"), _draft("a quiet night")], verdicts=["safe", "safe"])
    gate = SafetyGate(blocked_terms=["gore"], complete=llm, policy="no gore")
    post = _writer(llm, RecordingImages(), gate).write([BRIEF])[0]
    assert [v.safe for v in post.versions] == [False, True] and post.best == 1 and post.refusal is None
    assert post.versions[0].safety.flags[0].reason == "contains blocked terms: gore"
    rewrite = [r for role, rs in llm.requests if role == "writer" for r in rs][-1]
    assert "stopped by the safety review: contains blocked terms: gore" in rewrite["messages"][-1]["content"]
    judged = [r for role, rs in llm.requests if role == "judge" for r in rs]
    assert len(judged) == 2 and "no gore" in judged[0]["messages"][-1]["content"]
    saved = json.loads((write_post(tmp_path, post).parent / "post.json").read_text())
    assert saved["versions"][0]["withheld"] and "body" not in saved["versions"][0]
    assert "GORE" not in (tmp_path / "u1" / "post.json").read_text()


def test_a_post_flagged_every_time_is_refused_after_the_rewrites(tiny_models, tmp_path):
    llm = ScriptedLLM([_draft(f"draft {n}") for n in range(3)], verdicts=["unsafe"] * 3)
    gate = SafetyGate(complete=llm, policy="no violence")
    post = _writer(llm, RecordingImages(), gate, rewrites=2).write([BRIEF])[0]
    assert len(post.versions) == 3 and post.best == -1 and post.flags == 3
    assert "policy: breaks the content policy: graphic violence in the body" in post.refusal
    page = write_post(tmp_path, post).read_text()
    assert "No post" in page and "safety gate" in page and "draft" not in page


def test_flagged_images_are_rendered_again_with_new_seeds(tiny_models):
    llm = ScriptedLLM([_draft("same text"), _draft("same text")], verdicts=[])
    images = RecordingImages()
    post = _writer(llm, images, SafetyGate(images=FlagFirstCall())).write([BRIEF])[0]
    assert [v.safety.flagged_media for v in post.versions] == [{"image": [0]}, {}]
    (first,), (second,) = images.calls  # the unchanged prompt was not reused: its image was flagged
    assert first[0] == second[0] and first[1] != second[1] and post.best == 1


def test_a_stopped_writer_makes_no_further_call(tiny_models):
    llm = ScriptedLLM([_draft("a night out")], verdicts=[])
    images = RecordingImages()
    writer = _writer(llm, images, gate=None)
    writer.stopped = lambda: len(llm.requests) >= 2  # the client leaves once the idea is there
    with pytest.raises(GenerationStopped, match="stopped before the first draft"):
        writer.write([BRIEF])
    assert [role for role, _ in llm.requests] == ["writer", "writer"] and images.calls == []


LOOPED_IDEA = "Daily News Update, Daily News Post, Daily News Post, My Daily News Post, My Daily News Post"


def test_a_looping_idea_is_asked_again_then_replaced_by_its_format(tiny_models):
    """SmolLM2's idea in the demo repeated a phrase: asked for again, then replaced if it loops again."""
    llm = ScriptedLLM([_draft("a night out")], verdicts=[], ideas=[LOOPED_IDEA, "a night at the drive-in"])
    post = _writer(llm, RecordingImages(), gate=None).write([BRIEF])[0]
    assert post.idea == "a night at the drive-in" and post.errors == []
    assert [len(r) for role, r in llm.requests][:3] == [1, 1, 1]  # styles, the idea, the idea again

    llm = ScriptedLLM([_draft("a night out")], verdicts=[], ideas=[LOOPED_IDEA, LOOPED_IDEA])
    post = _writer(llm, RecordingImages(), gate=None).write([BRIEF])[0]
    assert post.idea == "Story Content: a narrative or anecdote that carries the theme"
    assert post.errors == [
        f"the idea step failed (degenerate text, repeated_ngram: {LOOPED_IDEA!r}); used {post.idea!r} instead"
    ]
