"""Scorers for generated content: CLIPScore and history relevance."""
