"""Ray wiring shared by the batch jobs (``jobs/``) and the Serve application (``serve/``).

Joining or starting a cluster, the LLM deployments every LLM role is served by, and the chat clients that
reach them; ``jobs/`` and ``serve/`` both import this package and never each other.
"""
