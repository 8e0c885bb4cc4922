"""Model providers: pure wire codecs, one HTTP client, and the simulated provider."""
