"""TailorBench content evaluation: coherence, novelty, aesthetics and hallucination of posts."""
