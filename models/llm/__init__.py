"""LLM roles, prompt templates and structured-output parsing (no Ray here: jobs/ and runtime/ run them)."""
