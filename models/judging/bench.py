"""TailorBench over a batch of users: every method's posts, then blind scores for them and the ground truth.

Every method (``models.judging.ablations``) writes with the same seeds in one ``PostWriter`` run; each post
and each user's test item (the ground truth) is scored by the same code: coherence in CLIP space against the
user's history and test item, and novelty, aesthetic and hallucination by the judge LLM, which never sees the
method and gets the batch's posts in a seeded shuffled order, with facts from ``facts`` (hallucination).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from models.config import JudgeConfig
from models.data.loader import resolve_media_uri
from models.generation.writer import Complete, PostWriter, UserBrief, split_groups
from models.judging.ablations import method_briefs, post_view
from models.judging.coherence import coherence, visual_coherence
from models.judging.judge import FactSource, PostView, judge_requests, judged_scores, shows_images
from models.media import MediaError, VideoClip, video_clip
from models.scoring.clip_score import CLIPScorer

JUDGE_ROLES = ("judge", "visual_judge")  # the judge's LLM roles: posts without, and with, images or clips


def judge_roles(max_images: int) -> tuple[str, ...]:
    """The judge roles that get requests: the visual judge only when it is shown images or frames."""
    return JUDGE_ROLES if max_images > 0 else JUDGE_ROLES[:1]


def item_media(
    item: dict[str, Any], data_root: str, frames: int
) -> tuple[list[Image.Image], list[VideoClip]]:
    """The readable images and videos of a catalogue item; unreadable files are left out."""
    images = []
    for uri in item.get("image_uris") or []:
        try:
            with Image.open(resolve_media_uri(data_root, uri)) as image:
                images.append(image.convert("RGB"))
        except OSError:  # unreadable or not an image
            continue  # a missing ground-truth image leaves a text-only ground truth
    videos = []
    for uri in item.get("video_uris") or []:
        try:
            videos.append(video_clip(resolve_media_uri(data_root, uri), frames))
        except MediaError:
            continue
    return images, videos


@dataclass
class TailorBench:
    """Writes every method's posts for a batch of users, then scores them and the ground truth blind."""

    complete: Complete  # the writer's and the judges' LLM calls (``JUDGE_ROLES``)
    writer: PostWriter
    scorer: CLIPScorer
    facts: FactSource
    cards: Mapping[str, str]  # item_id -> card
    media: Mapping[str, dict[str, Any]]  # item_id -> its image_uris and video_uris
    data_root: str  # what media URIs are relative to
    settings: JudgeConfig
    max_images: int  # images (and clip frames) per visual judge prompt; 0: the judge sees none
    score_frames: int  # frames of a clip that coherence rates
    seed: int = 0

    def score(self, users: list[dict[str, Any]], briefs: list[UserBrief]) -> list[dict[str, Any]]:
        """One row per (method, user) of refined users and their writer's briefs: the four metrics, the
        judge's errors, requests, failures and retries, and whether the post failed."""
        views = self._views(users, briefs)
        values = self._coherence(views)
        judged = [view for view in views if view.text]
        order = np.random.default_rng(self.seed).permutation(len(judged))  # blind, shuffled order
        shuffled = [judged[i] for i in order]
        facts = self.facts.facts([view.text for view in shuffled])
        requests = judge_requests(shuffled, facts, self.max_images)
        visual = [r for r in requests if shows_images(r)]
        answers = {
            **(self.complete([r for r in requests if not shows_images(r)], "judge") if requests else {}),
            **(self.complete(visual, "visual_judge") if visual else {}),
        }
        rows = []
        for view, value in zip(views, values, strict=True):
            rated_visually = bool(view.images or view.videos) and self.max_images > 0
            keys = (f"{view.key}|quality", f"{view.key}|facts")
            asked = [answers[key] for key in keys if key in answers]
            errors = [answer.error for answer in asked if answer.error]
            rows.append(
                {"method": view.method, "user_id": view.user_id, "coherence": value}
                | judged_scores(view, answers, rated_visually)
                | {
                    "judge_errors": "; ".join(errors) or None,
                    "judge_requests": len(asked),
                    "judge_failures": len(errors),
                    "judge_retries": sum(answer.attempts - 1 for answer in asked),
                    "failed_post": not view.text,
                }
            )
        return rows

    def _views(self, users: list[dict[str, Any]], briefs: list[UserBrief]) -> list[PostView]:
        """Each user's post per method, as the judge sees it, and their test item as the ground truth."""
        methods = self.settings.methods
        written = [
            method_briefs(
                method,
                row["user_id"],
                {"initial": row["profile_initial"], "refined": row["profile_refined"]},
                brief.history_cards,
                brief.exemplar_cards,
                self.settings.generic_profile,
            )
            for row, brief in zip(users, briefs, strict=True)
            for method in methods
            if method != "ground_truth"
        ]
        posts = {post.user_id: post for post in self.writer.write(written)} if written else {}
        views = []
        for row in users:
            user_id, target = row["user_id"], row["test_candidates"][0]
            history, card = [self.cards[i] for i in row["history"]], self.cards[target]
            for method in methods:
                if method == "ground_truth":
                    images, videos = item_media(self.media[target], self.data_root, self.score_frames)
                    views.append(PostView(method, user_id, card, images, history, card, videos))
                else:
                    views.append(post_view(method, user_id, posts[f"{method}/{user_id}"], history, card))
        return views

    def _coherence(self, views: list[PostView]) -> list[float]:
        """Each post's images and clips (text-only posts: the text) against its history and test item."""
        values = []
        for view in views:
            if not view.text:
                values.append(np.nan)
                continue
            reference = self.scorer.embed_texts([*view.history_cards, view.target_card]).cpu().numpy()
            visuals = view.visuals(self.score_frames)
            if visuals:
                flat = [frame for frames in visuals for frame in frames]
                embedded = self.scorer.embed_images(flat).cpu().numpy()
                values.append(visual_coherence(split_groups(embedded, visuals), reference))
            else:
                values.append(coherence(self.scorer.embed_texts([view.text]).cpu().numpy(), reference))
        return values
