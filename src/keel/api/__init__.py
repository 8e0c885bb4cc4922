"""The HTTP edge: OpenAI-shaped gateway routes, the admin API and health probes."""
