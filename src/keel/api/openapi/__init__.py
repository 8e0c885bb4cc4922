"""The admin API's OpenAPI document: declarative specs per area (core, jobs, prompts, evals, rag, agents),
assembled once by document.py. Nothing here is read at import time by the gateway: app.py imports the
document module only when /api/openapi.json is first asked for."""
