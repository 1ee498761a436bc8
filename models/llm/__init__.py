"""LLM roles, prompt templates and structured-output parsing (no Ray here; jobs/llm_pass.py runs them)."""
