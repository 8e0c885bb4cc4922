"""The prompt template language: `{{ name }}` substitution only, checked at compile time, never evaluated."""

from __future__ import annotations

from typing import Any

import pytest

from keel.prompts.render import Template, TemplateError, Var, check_variables, compile_template, render


def one(text: str, **values: Any) -> str:
    return str(render([{"role": "user", "content": text}], values)[0]["content"])


def test_placeholders_with_or_without_spaces_are_substituted() -> None:
    assert one("Hi {{name}}, {{ name }} and {{  other_2 }}.", name="Ada", other_2="x") == "Hi Ada, Ada and x."
    assert compile_template("a {{ b }} c").parts == ("a ", Var("b"), " c")
    assert compile_template("plain").parts == ("plain",)
    assert compile_template("").parts == ("",)


def test_values_that_are_not_strings_are_inserted_as_json() -> None:
    assert one("{{n}} {{b}} {{x}} {{o}}", n=3, b=True, x=None, o={"k": [1, "é"]}) == '3 true null {"k":[1,"é"]}'


def test_literal_braces() -> None:
    assert one("{{{{name}}}} is {{name}}", name="Ada") == "{{name}} is Ada"
    assert one('JSON: {"a": {"b": 1}} and }} alone') == 'JSON: {"a": {"b": 1}} and }} alone'
    assert one("{single} braces {stay}") == "{single} braces {stay}"


@pytest.mark.parametrize(
    "text",
    [
        "{{__class__}}",
        "{{ _private }}",
        "{{ user.name }}",
        "{{ items[0] }}",
        "{{ name | upper }}",
        "{{ name() }}",
        "{{ 1 + 1 }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ {{name}} }}",
        "{{{name}}}",
        "unclosed {{ name",
        "{{}}",
    ],
)
def test_anything_but_a_plain_name_is_refused_at_compile_time(text: str) -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(text, "messages[0].content")
    assert err.value.where == "messages[0].content"
    assert "not a placeholder" in err.value.message


def test_other_template_languages_are_plain_text() -> None:
    assert one("{% for x in y %}{{ x }}{% endfor %} ${x} {x}", x="X") == "{% for x in y %}X{% endfor %} ${x} {x}"


def test_a_value_holding_placeholders_is_not_rendered_again() -> None:
    out = one("Q: {{question}} / {{secret}}", question="{{secret}} {{__class__}} {{{{x}}}}", secret="s3cr3t")
    assert out == "Q: {{secret}} {{__class__}} {{{{x}}}} / s3cr3t"


def test_missing_and_extra_variables_are_named() -> None:
    names = compile_template("{{a}} {{b}}").names
    with pytest.raises(TemplateError) as missing:
        check_variables(names, {"a": 1})
    assert (missing.value.where, "'b'" in missing.value.message) == ("variables.b", True)
    with pytest.raises(TemplateError) as extra:
        check_variables(names, {"a": 1, "b": 2, "c": 3})
    assert extra.value.where == "variables.c"
    assert check_variables(names, {"a": 1, "b": "two"}) == {"a": "1", "b": "two"}


def test_text_parts_are_rendered_and_other_parts_and_fields_kept() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/{{a}}.png"}}
    messages = [
        {"role": "system", "content": "for {{a}}", "name": "{{a}}"},
        {"role": "user", "content": [{"type": "text", "text": "look: {{a}}"}, image]},
    ]
    out = render(messages, {"a": "Ada"})
    assert out[0] == {"role": "system", "content": "for Ada", "name": "{{a}}"}  # only content is a template
    assert out[1]["content"] == [{"type": "text", "text": "look: Ada"}, image]
    assert messages[0]["content"] == "for {{a}}"  # the input is not changed


def test_a_template_renders_from_its_parts_only() -> None:
    t = Template(("x", Var("a"), "y"))
    assert t.render({"a": "-"}) == "x-y"
    with pytest.raises(KeyError):
        t.render({})
