"""Fakes of the outside world for Keel's tests: a fake upstream LLM provider over real HTTP."""

from .fake_upstream import FakeUpstream, Script

__all__ = ["FakeUpstream", "Script"]
