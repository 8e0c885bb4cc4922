"""`responses:`: whether the Responses API edge keeps responses (conversation state) in the store."""

from __future__ import annotations

from keel.config.parts import Model


class ResponsesConfig(Model):
    # keep each Responses API response its client asks stored (`store`, true by default) for
    # `previous_response_id`, item references and GET; false: Keel keeps none, whatever clients ask
    store: bool = True
