"""The simulated provider answers structured requests: tool calls whose arguments fit the tools' schemas
(tool_choice respected) and text that fits `response_format`. Checked on the schema sampler directly
(every value validated with jsonschema) and over real HTTP on the quick start's `demo` alias with the
official SDKs (`chat.completions.parse`, `pydantic_function_tool`) and instructor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import anthropic
import instructor
import jsonschema
import openai
import pytest
import yaml
from pydantic import BaseModel, Field

from keel.config import STARTER
from keel.providers.schema_sample import sample
from tests.conftest import ADMIN, Gateway


class Color(StrEnum):
    red = "red"
    blue = "blue"


class Address(BaseModel):
    street: str
    city: str = Field(min_length=20)
    zip_code: str | None = None


class Person(BaseModel):
    name: str
    age: int = Field(ge=18, le=120)
    height_m: float = Field(gt=0.5)
    email: str = Field(json_schema_extra={"format": "email"})
    born: dt.date
    favourite: Color
    role: Literal["admin", "user"]
    tags: list[str] = Field(min_length=2)
    address: Address
    previous: list[Address]
    scores: dict[str, int]
    active: bool


class Tree(BaseModel):
    label: str
    children: list[Tree]


class Weather(BaseModel):
    """Weather in a city."""

    city: str
    unit: Literal["c", "f"]


class Flight(BaseModel):
    """Book a flight."""

    origin: str
    destination: str
    passengers: int = Field(ge=1, le=9)


# ---- the sampler, checked against the schemas with jsonschema ------------------------------------


SCHEMAS: list[Any] = [
    Person.model_json_schema(),
    Tree.model_json_schema(),
    {"type": "object", "properties": {"a": {"type": ["null", "integer"], "minimum": 5}}, "required": ["a"]},
    {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 3, "maxItems": 3},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"const": 7}}, "required": ["x"]}]},
    {
        "allOf": [
            {"properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}},
        ]
    },
    {"type": "number", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
    {"type": "string", "format": "uuid"},
    {"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}, "additionalProperties": False},
    {"type": "object"},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_samples_fit_their_schema(schema: Any) -> None:
    value = sample(schema)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    assert sample(schema) == value  # deterministic


def test_every_property_is_filled_and_models_validate() -> None:
    person = Person.model_validate(sample(Person.model_json_schema()))
    assert person.address.city and person.previous and len(person.tags) >= 2
    tree = Tree.model_validate(sample(Tree.model_json_schema()))  # recursion stops, still valid
    assert tree.children


# ---- over HTTP on the quick start's demo alias ------------------------------------------------------


@pytest.fixture
def demo(make_gateway: Any, tmp_path: Path) -> Gateway:
    raw = yaml.safe_load(STARTER)
    raw["admin_token"] = ADMIN
    raw["storage"] = {"url": f"sqlite:///{tmp_path}/keel.db"}
    raw["traces"] |= {"spill_dir": str(tmp_path / "spill"), "flush_interval_ms": 10}
    return make_gateway(raw)  # type: ignore[no-any-return]


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


ASK: Any = [{"role": "user", "content": "Invent a person."}]


def test_chat_completions_parse(demo: Gateway) -> None:
    with client(demo) as c:
        done = c.chat.completions.parse(model="demo", messages=ASK, response_format=Person)
        again = c.chat.completions.parse(model="demo", messages=ASK, response_format=Person)
        with c.chat.completions.stream(model="demo", messages=ASK, response_format=Person) as s:
            streamed = s.get_final_completion()
    person = done.choices[0].message.parsed
    assert isinstance(person, Person) and person.age >= 18 and person.favourite is Color.red
    assert again.choices[0].message.parsed == person  # deterministic
    assert streamed.choices[0].message.parsed == person


def test_json_object_is_valid_json(demo: Gateway) -> None:
    with client(demo) as c:
        out = c.chat.completions.create(model="demo", messages=ASK, response_format={"type": "json_object"})
    assert isinstance(json.loads(out.choices[0].message.content or ""), dict)


def test_tool_calls_fit_the_schema_and_respect_tool_choice(demo: Gateway) -> None:
    tools = [openai.pydantic_function_tool(Weather), openai.pydantic_function_tool(Flight)]
    with client(demo) as c:
        first = c.chat.completions.parse(model="demo", messages=ASK, tools=tools)
        named = c.chat.completions.parse(
            model="demo", messages=ASK, tools=tools, tool_choice={"type": "function", "function": {"name": "Flight"}}
        )
        required = c.chat.completions.create(model="demo", messages=ASK, tools=tools, tool_choice="required")
        none = c.chat.completions.create(model="demo", messages=ASK, tools=tools, tool_choice="none")
    call = (first.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "Weather" and isinstance(call.function.parsed_arguments, Weather)
    flight = (named.choices[0].message.tool_calls or [])[0]
    assert flight.function.name == "Flight" and isinstance(flight.function.parsed_arguments, Flight)
    assert flight.function.parsed_arguments.passengers >= 1
    assert (required.choices[0].message.tool_calls or [])[0].function.name == "Weather"
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


def test_anthropic_tool_use_fits_the_schema(demo: Gateway) -> None:
    tool: Any = {"name": "book", "input_schema": Flight.model_json_schema()}
    with anthropic.Anthropic(base_url=demo.url, api_key=demo.key, max_retries=0) as c:
        m = c.messages.create(
            model="demo", max_tokens=200, messages=ASK, tools=[tool], tool_choice={"type": "tool", "name": "book"}
        )
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "book"
    assert Flight.model_validate(block.input).passengers >= 1


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA, instructor.Mode.JSON])
def test_instructor(demo: Gateway, mode: instructor.Mode) -> None:
    with client(demo) as c:
        ic = instructor.from_openai(c, mode=mode)
        person = ic.chat.completions.create(model="demo", response_model=Person, messages=ASK, max_retries=0)
    assert isinstance(person, Person) and person.role == "admin"


def test_pydantic_ai_structured_output(demo: Gateway) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async def run() -> Person:
        async with openai.AsyncOpenAI(base_url=demo.base_url, api_key=demo.key, max_retries=0) as c:
            model = OpenAIChatModel("demo", provider=OpenAIProvider(openai_client=c))
            return (await Agent(model, output_type=Person).run("Invent a person.")).output

    person = asyncio.run(run())
    assert isinstance(person, Person) and person.address.city
