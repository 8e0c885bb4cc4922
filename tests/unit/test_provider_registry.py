"""build_provider for the AWS-signed catalog row: where its region and keys come from, and the one
message naming the fix when they are missing."""

from __future__ import annotations

import asyncio

import pytest

from keel.config import ProviderConfig
from keel.errors import ConfigError
from keel.providers.http import Sessions
from keel.providers.registry import aws_signer, build_provider
from keel.sigv4 import Credentials

ENV = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret"}


def build(env: dict[str, str], **fields: str) -> object:
    sessions = Sessions()
    try:
        return build_provider("aws", ProviderConfig(type="bedrock", **fields), sessions, env, redact=str)
    finally:
        asyncio.run(sessions.aclose())


def test_region_and_keys_come_from_the_environment() -> None:
    assert build(ENV).name == "aws"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "fields", "path"),
    [
        ({k: v for k, v in ENV.items() if k != "AWS_REGION"}, {}, "providers.aws.aws_region"),
        ({"AWS_REGION": "us-east-1"}, {}, "providers.aws.aws_access_key_id"),
    ],
)
def test_missing_region_or_keys_is_one_message_naming_the_key(
    env: dict[str, str], fields: dict[str, str], path: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(env, **fields)
    assert info.value.issues[0].path == path and "fix" in str(info.value)


def test_a_bedrock_api_key_needs_no_aws_keys() -> None:
    assert build({"AWS_REGION": "us-east-1", "AWS_BEARER_TOKEN_BEDROCK": "brk-key"}).name == "aws"  # type: ignore[attr-defined]


def test_the_signer_signs_path_and_body_for_the_base_urls_host() -> None:
    signer = aws_signer("https://bedrock-runtime.eu-west-1.amazonaws.com", "eu-west-1", Credentials("AKID", "s", "tok"))
    one = signer("/model/m%3A0/converse", b"{}")
    two = signer("/model/m%3A0/converse", b"{ }")
    assert set(one) == {"x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "authorization"}
    assert "/eu-west-1/bedrock/aws4_request" in one["authorization"] and one["authorization"] != two["authorization"]


def test_aws_secrets_are_known_to_the_redactor() -> None:
    from keel import config
    from keel.traces.redaction import known_secrets

    raw = {
        "providers": {
            "aws": {"type": "bedrock", "aws_secret_access_key": "yaml-secret", "aws_session_token": "yaml-token"},
            "aws_env": {"type": "bedrock"},
        },
        "models": {"m": {"targets": [{"provider": "aws", "model": "amazon.nova-lite-v1:0"}]}},
    }
    env = {"AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_BEARER_TOKEN_BEDROCK": "env-bearer"}
    found = known_secrets(config.parse(raw, {}), env)
    assert {"yaml-secret", "yaml-token", "env-secret", "env-bearer"} <= set(found)


@pytest.mark.parametrize(
    ("model", "known"),
    [
        ("amazon.nova-pro-v1:0", "amazon.nova-pro"),
        ("us.amazon.nova-lite-v1:0", "amazon.nova-lite"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5"),
        ("global.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku"),
    ],
)
def test_bedrock_model_ids_and_inference_profiles_are_priced(model: str, known: str) -> None:
    from keel.providers.prices import PriceBook

    book = PriceBook.bundled()
    assert book.lookup(model) is not None and book.lookup(model) == book.lookup(known)
