"""TailorBench's compared methods: what each ablation writes from, and the post the judge then sees."""

from __future__ import annotations

from models.generation.writer import GeneratedPost, UserBrief
from models.judging.judge import PostView


def method_briefs(
    method: str, user_id: str, profiles: dict[str, str], history: list[str], evidence: list[str], generic: str
) -> UserBrief:
    """What one method writes from: the full system, or it without profile, RAG, reflection or refinement."""
    key = f"{method}/{user_id}"
    if method == "no_profile":
        return UserBrief(key, generic, history, evidence)
    if method == "no_refinement":
        return UserBrief(key, profiles["initial"], history, evidence)
    return UserBrief(
        key,
        profiles["refined"],
        history,
        evidence,
        use_exemplars=method != "no_rag",
        reflection_rounds=0 if method == "no_reflection" else None,
    )


def post_view(method: str, user_id: str, post: GeneratedPost, history: list[str], target: str) -> PostView:
    """The best version of a generated post as the judge sees it (empty when the writer failed)."""
    if post.best < 0:
        return PostView(method, user_id, "", [], history, target)
    best = post.versions[post.best]
    text = f"{best.title}\n{best.body}\n{' '.join('#' + tag for tag in best.tags)}"
    return PostView(method, user_id, text, list(best.images), history, target, list(best.videos))
