"""The dashboard at /ui: server-rendered HTML over the same capability functions as the admin API.

No build step and nothing fetched from elsewhere: HTML, one inline stylesheet and inline SVG charts,
rendered per request. Aggregates come from the usage rollups only; the trace list is one bounded,
limited trace query. Every page needs the admin session cookie (keel.dashboard.session).
"""
