import copy
import json

import pytest

from operategpt.errors import BadRequest
from operategpt.templating.templates import (
    MissingValueError,
    Template,
    TemplateError,
    TextTemplate,
    compile_template,
    compile_text,
    placeholders,
)

SEED_BODY = {"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}", "temperature": "{MODEL_TEMPERATURE}"}

TRICKY_PROMPTS = [
    'say "hi"',
    "back\\slash \\n not a newline",
    "line one\nline two\r\n\ttabbed",
    "unicode: héllo wörld, 中文, русский",
    "emoji: 🤖🚀 and 👩‍👩‍👧",
    "{USER_PROMPT}",
    "inject {MODEL_NAME} and {NOT_GIVEN} and {lower}",
    '"}, "model_name": "evil", "x": {"',
    "",
    "\u0000 nul and \u2028 separator",
]


# --- placeholders -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", frozenset()),
        ("plain", frozenset()),
        ("{USER_PROMPT}", frozenset({"USER_PROMPT"})),
        ("{A}{B_2}{A}", frozenset({"A", "B_2"})),
        ("{lower} {Mixed} {_X} {1A} { A } {A-B}", frozenset()),
        ('{"a": 1} and {TOP_P}', frozenset({"TOP_P"})),
        ("{{X}}", frozenset({"X"})),
    ],
)
def test_placeholders(text, expected):
    assert placeholders(text) == expected


# --- documents ---------------------------------------------------------------------------------


def test_seed_body_renders_typed_values():
    template = compile_template(SEED_BODY)
    assert isinstance(template, Template)
    assert template.names == frozenset({"USER_PROMPT", "MODEL_NAME", "MODEL_TEMPERATURE"})
    values = {"USER_PROMPT": "who are you?", "MODEL_NAME": "chatglm2-6b", "MODEL_TEMPERATURE": 0.7}
    out = template.render(values)
    assert out == {"input": "who are you?", "model_name": "chatglm2-6b", "temperature": 0.7}
    assert type(out["temperature"]) is float


@pytest.mark.parametrize(
    "value",
    [
        0.7,
        0,
        1,
        -3,
        12345678901234567890,
        True,
        False,
        None,
        "text",
        "",
        [1, "two", None],
        {"a": [{"b": 2}]},
        [],
    ],
)
def test_exact_placeholder_keeps_json_type(value):
    out = compile_template({"v": "{VALUE}", "nested": ["{VALUE}"]}).render({"VALUE": value})
    assert out == {"v": value, "nested": [value]}
    assert type(out["v"]) is type(value)
    assert type(out["nested"][0]) is type(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.7, "t=0.7"),
        (2, "t=2"),
        (True, "t=true"),
        (False, "t=false"),
        (None, "t=null"),
        ("str", "t=str"),
        ([1, "a", None], 't=[1,"a",null]'),
        ({"k": "v", "n": 1.5}, 't={"k":"v","n":1.5}'),
        ({"ü": "中"}, 't={"ü":"中"}'),
    ],
)
def test_placeholder_inside_longer_string_is_text(value, text):
    assert compile_template({"x": "t={V}"}).render({"V": value}) == {"x": text}


@pytest.mark.parametrize("doc", ["{V}", ["{V}"], {"a": "{V}"}])
def test_top_level_shapes(doc):
    out = compile_template(doc).render({"V": 5})
    assert out == json.loads(json.dumps(doc).replace('"{V}"', "5"))


@pytest.mark.parametrize("doc", [None, True, 3, 2.5, "plain", "", [], {}])
def test_constant_documents(doc):
    template = compile_template(doc)
    assert template.names == frozenset()
    assert template.render({}) == doc
    assert type(template.render({})) is type(doc)


def test_nested_objects_and_arrays_at_any_depth():
    doc = {
        "model": "{MODEL_NAME}",
        "messages": [
            {"role": "system", "content": "You are {PERSONA}."},
            {"role": "user", "content": [{"type": "text", "text": "{USER_PROMPT}"}]},
        ],
        "options": {"sampling": {"temperature": "{MODEL_TEMPERATURE}", "top_p": 0.9, "stop": ["\n", None]}},
        "stream": False,
        "n": 1,
        "meta": None,
        "deep": [[[["{MODEL_NAME}"]]]],
    }
    template = compile_template(doc)
    assert template.names == frozenset({"MODEL_NAME", "PERSONA", "USER_PROMPT", "MODEL_TEMPERATURE"})
    values = {"MODEL_NAME": "m", "PERSONA": "a pirate", "USER_PROMPT": "hi", "MODEL_TEMPERATURE": 0.2}
    out = template.render(values)
    assert out == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "options": {"sampling": {"temperature": 0.2, "top_p": 0.9, "stop": ["\n", None]}},
        "stream": False,
        "n": 1,
        "meta": None,
        "deep": [[[["m"]]]],
    }


def test_key_order_is_preserved():
    out = compile_template({"z": 1, "{K}": 2, "a": "{V}"}).render({"K": "m", "V": 3})
    assert list(out) == ["z", "m", "a"]


def test_literal_braces_are_text():
    doc = {"a": '{"a": 1}', "b": "{lower} {Mixed} {} {{}}", "{not_a_key}": "{ SPACED }"}
    template = compile_template(doc)
    assert template.names == frozenset()
    assert template.render({}) == doc


def test_values_may_carry_extra_keys():
    out = compile_template({"a": "{A}"}).render({"A": 1, "B": 2, "USER_PROMPT": "unused"})
    assert out == {"a": 1}


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
def test_prompt_arrives_intact_through_json(prompt):
    doc = {"input": "{USER_PROMPT}", "wrapped": "<<{USER_PROMPT}>>", "m": "{MODEL_NAME}"}
    template = compile_template(doc)
    out = template.render({"USER_PROMPT": prompt, "MODEL_NAME": "m1"})
    received = json.loads(json.dumps(out))
    assert received == {"input": prompt, "wrapped": f"<<{prompt}>>", "m": "m1"}


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
def test_values_are_not_rescanned(prompt):
    # Two placeholders in one string exercises the multi-piece renderer.
    out = compile_template("{A}|{USER_PROMPT}|{A}").render({"A": "{USER_PROMPT}", "USER_PROMPT": prompt})
    assert out == "{USER_PROMPT}|" + prompt + "|{USER_PROMPT}"


def test_many_placeholders_in_one_string():
    out = compile_template("{A}-{B}-{A}{C}!").render({"A": "a", "B": 2, "C": None})
    assert out == "a-2-anull!"


# --- keys --------------------------------------------------------------------------------------


def test_key_substitution():
    template = compile_template({"{FIELD}": "{VALUE}", "prefix_{FIELD}": 1, "fixed": {"{INNER}": True}})
    assert template.names == frozenset({"FIELD", "VALUE", "INNER"})
    out = template.render({"FIELD": "prompt", "VALUE": [1], "INNER": "x"})
    assert out == {"prompt": [1], "prefix_prompt": 1, "fixed": {"x": True}}


@pytest.mark.parametrize(
    ("value", "key"), [(7, "7"), (1.5, "1.5"), (True, "true"), (None, "null"), ([1], "[1]"), ("s", "s")]
)
def test_exact_placeholder_key_is_always_text(value, key):
    out = compile_template({"{K}": 0}).render({"K": value})
    assert out == {key: 0}


def test_rendered_key_colliding_with_fixed_key_is_refused():
    template = compile_template({"model": "fixed", "{PARAM_KEY}": "{PARAM_VALUE}"})
    assert template.render({"PARAM_KEY": "other", "PARAM_VALUE": 1}) == {"model": "fixed", "other": 1}
    with pytest.raises(TemplateError) as info:
        template.render({"PARAM_KEY": "model", "PARAM_VALUE": "evil"})
    assert info.value.message == "rendered template has duplicate keys in the object at $"
    assert isinstance(info.value, BadRequest)  # a 400


def test_duplicate_key_error_names_the_nested_object():
    template = compile_template({"a": [{"{K}": 1, "{J}": 2}]})
    with pytest.raises(TemplateError) as info:
        template.render({"K": "x", "J": "x"})
    assert info.value.message == 'rendered template has duplicate keys in the object at $["a"][0]'


# --- freshness ----------------------------------------------------------------------------------


def test_renders_are_independent_and_template_unchanged():
    doc = {
        "const": {"list": [1, 2, {"x": "y"}], "obj": {"k": "v"}},
        "dyn": {"p": "{USER_PROMPT}", "l": ["{USER_PROMPT}", [0]]},
        "empty": {},
        "empty_list": [],
    }
    original = copy.deepcopy(doc)
    template = compile_template(doc)
    first = template.render({"USER_PROMPT": "one"})
    second = template.render({"USER_PROMPT": "two"})
    assert first["dyn"]["p"] == "one"
    assert second["dyn"]["p"] == "two"

    first["const"]["list"].append(3)
    first["const"]["list"][2]["x"] = "changed"
    first["const"]["obj"]["new"] = 1
    first["dyn"]["l"][1].append(1)
    first["empty"]["a"] = 1
    first["empty_list"].append(1)
    first["added"] = True

    assert second == {
        "const": {"list": [1, 2, {"x": "y"}], "obj": {"k": "v"}},
        "dyn": {"p": "two", "l": ["two", [0]]},
        "empty": {},
        "empty_list": [],
    }
    third = template.render({"USER_PROMPT": "one"})
    assert third == {
        "const": {"list": [1, 2, {"x": "y"}], "obj": {"k": "v"}},
        "dyn": {"p": "one", "l": ["one", [0]]},
        "empty": {},
        "empty_list": [],
    }
    assert doc == original


def test_container_identities_are_fresh():
    template = compile_template({"a": {"b": [1]}, "c": ["{X}"]})
    one, two = template.render({"X": 1}), template.render({"X": 1})
    assert one is not two
    assert one["a"] is not two["a"]
    assert one["a"]["b"] is not two["a"]["b"]
    assert one["c"] is not two["c"]


def test_mutating_source_document_after_compile_has_no_effect():
    doc = {"a": [1, 2], "b": {"c": "{X}"}}
    template = compile_template(doc)
    doc["a"].append(3)
    doc["b"]["c"] = "changed"
    doc["new"] = 1
    assert template.render({"X": 9}) == {"a": [1, 2], "b": {"c": 9}}


# --- missing values -----------------------------------------------------------------------------


def test_missing_single_value():
    template = compile_template({"top_p": "{TOP_P}", "input": "{USER_PROMPT}"})
    with pytest.raises(MissingValueError) as info:
        template.render({"USER_PROMPT": "hi"})
    assert info.value.names == ("TOP_P",)
    assert info.value.message == "no value for placeholder {TOP_P}"
    assert str(info.value) == "no value for placeholder {TOP_P}"
    assert isinstance(info.value, BadRequest)  # a 400
    assert isinstance(info.value, TemplateError)
    assert isinstance(info.value, BadRequest)


def test_missing_several_values_sorted():
    template = compile_template({"{KEY}": "{B}", "x": ["pre {A} post", "{C}"], "ok": "{OK}"})
    with pytest.raises(MissingValueError) as info:
        template.render({"OK": 1})
    assert info.value.names == ("A", "B", "C", "KEY")
    assert info.value.message == "no value for placeholders {A}, {B}, {C}, {KEY}"


def test_none_value_is_not_missing():
    assert compile_template({"a": "{A}", "b": "x{A}"}).render({"A": None}) == {"a": None, "b": "xnull"}


def test_non_json_value_inside_text_is_a_template_error():
    with pytest.raises(TemplateError) as info:
        compile_template({"a": "x{A}"}).render({"A": {1, 2}})
    assert info.value.message == "the value for placeholder {A} is not JSON data"


# --- compile-time rejection --------------------------------------------------------------------


ONLY_JSON = "only objects, arrays, strings, numbers, booleans and null are allowed"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({1, 2}, f"template has a value of type set at $; {ONLY_JSON}"),
        ({"a": [1, (2, 3)]}, f'template has a value of type tuple at $["a"][1]; {ONLY_JSON}'),
        ({"a": b"bytes"}, f'template has a value of type bytes at $["a"]; {ONLY_JSON}'),
        ({"x y": {"k": object()}}, f'template has a value of type object at $["x y"]["k"]; {ONLY_JSON}'),
        ({"a": {1: "x"}}, 'template has an object key of type int at $["a"]'),
        ({"a": float("nan")}, 'template has a non-finite number at $["a"]; JSON has no NaN or Infinity'),
        ([float("inf")], "template has a non-finite number at $[0]; JSON has no NaN or Infinity"),
    ],
)
def test_non_json_documents_rejected(doc, message):
    with pytest.raises(TemplateError) as info:
        compile_template(doc)
    assert info.value.message == message
    assert isinstance(info.value, BadRequest)  # a 400


def test_too_deep_document_rejected():
    doc = "{X}"
    for _ in range(300):
        doc = [doc]
    with pytest.raises(TemplateError) as info:
        compile_template(doc)
    assert info.value.message.startswith("template is nested deeper than 256 levels at $[0][0]")


def test_moderately_deep_document_renders():
    doc = "{X}"
    for _ in range(200):
        doc = {"k": doc}
    out = compile_template(doc).render({"X": 1})
    for _ in range(200):
        out = out["k"]
    assert out == 1


# --- text templates ------------------------------------------------------------------------------


def test_text_template_basic():
    template = compile_text("Bearer {API_KEY}")
    assert isinstance(template, TextTemplate)
    assert template.names == frozenset({"API_KEY"})
    assert template.render({"API_KEY": "sk-123"}) == "Bearer sk-123"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.7, "v=0.7"), (True, "v=true"), (None, "v=null"), ([1, "a"], 'v=[1,"a"]'), ("s", "v=s"), (3, "v=3")],
)
def test_text_template_typed_values_become_text(value, text):
    assert compile_text("v={V}").render({"V": value}) == text


@pytest.mark.parametrize(("value", "text"), [(0.7, "0.7"), (False, "false"), ({"a": 1}, '{"a":1}')])
def test_text_template_exact_placeholder_is_still_text(value, text):
    assert compile_text("{V}").render({"V": value}) == text


def test_constant_text_template():
    template = compile_text("http://example.com/{lower}/api?x={ A }")
    assert template.names == frozenset()
    assert template.render({}) == "http://example.com/{lower}/api?x={ A }"


def test_text_template_missing_values():
    with pytest.raises(MissingValueError) as info:
        compile_text("{B}{A}{B}").render({})
    assert info.value.message == "no value for placeholders {A}, {B}"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a b", "a%20b"),
        ("a&b=c", "a%26b%3Dc"),
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
        ("héllo 中", "h%C3%A9llo%20%E4%B8%AD"),
        ("🤖", "%F0%9F%A4%96"),
        ("100%", "100%25"),
        ("{USER_PROMPT}", "%7BUSER_PROMPT%7D"),
        ("safe-_.~", "safe-_.~"),
        (0.7, "0.7"),
        (True, "true"),
        (None, "null"),
        ([1, "a b"], "%5B1%2C%22a%20b%22%5D"),
        ({"k": 1}, "%7B%22k%22%3A1%7D"),
    ],
)
def test_url_values_are_encoded(value, encoded):
    template = compile_text("http://host:8008/api/{MODEL_NAME}/gen?q={Q}&t=1", url=True)
    assert template.names == frozenset({"MODEL_NAME", "Q"})
    out = template.render({"MODEL_NAME": value, "Q": value})
    assert out == f"http://host:8008/api/{encoded}/gen?q={encoded}&t=1"


def test_url_literal_text_left_alone():
    template = compile_text("http://h/a b/{X}?x=1&y=é", url=True)
    assert template.render({"X": "a b"}) == "http://h/a b/a%20b?x=1&y=é"


def test_url_exact_placeholder_encoded():
    assert compile_text("{X}", url=True).render({"X": "a/b"}) == "a%2Fb"


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "\n"])
def test_header_rejects_line_breaks_from_values(value):
    template = compile_text("Bearer {TOKEN}", header=True)
    with pytest.raises(TemplateError) as info:
        template.render({"TOKEN": value})
    assert info.value.message.startswith("the value for placeholder {TOKEN} cannot be sent in a header")
    assert isinstance(info.value, BadRequest)  # a 400


@pytest.mark.parametrize("value", ["caf\u00e9 \u65e5\u672c", "a\x00b", "a\x7fb", " leading"])
def test_header_refuses_values_http_cannot_carry_naming_the_placeholder(value):
    template = compile_text("{TOKEN}", header=True)
    with pytest.raises(TemplateError) as info:
        template.render({"TOKEN": value})
    assert "{TOKEN}" in info.value.message


def test_header_value_latin1_and_inner_spaces_are_fine():
    assert compile_text("Bearer {T}", header=True).render({"T": "caf\u00e9 x"}) == "Bearer caf\u00e9 x"


def test_header_template_refuses_leading_whitespace_and_controls():
    for text in (" Bearer {T}", "a\x00{T}"):
        with pytest.raises(TemplateError):
            compile_text(text, header=True)


@pytest.mark.parametrize("value", ["..", ".", "...", "a/b", "/"])
def test_url_values_never_make_path_segments(value):
    rendered = compile_text("http://h/tenant/{T}/generate", url=True).render({"T": value})
    assert rendered.count("/") == 5 and "/../" not in rendered and "/./" not in rendered


def test_header_with_escaped_newline_in_json_text_is_allowed():
    # A list containing "\n" is inserted as compact JSON, where the newline is the two characters \n.
    assert compile_text("v={V}", header=True).render({"V": ["a\nb"]}) == 'v=["a\\nb"]'


def test_header_rejects_line_breaks_multi_placeholder():
    template = compile_text("{A} {B}", header=True)
    assert template.render({"A": "x", "B": "y"}) == "x y"
    with pytest.raises(TemplateError):
        template.render({"A": "x", "B": "y\n"})


@pytest.mark.parametrize("text", ["a\r\nb", "{X}\n", "\r"])
def test_header_template_with_line_break_rejected_at_compile(text):
    with pytest.raises(TemplateError) as info:
        compile_text(text, header=True)
    assert info.value.message.startswith("header value template contains a line break")


def test_header_values_otherwise_verbatim():
    assert compile_text("{V}", header=True).render({"V": 'é "q" \\ ÿ'}) == 'é "q" \\ ÿ'


def test_non_header_text_allows_line_breaks():
    assert compile_text("{V}").render({"V": "a\nb"}) == "a\nb"


def test_url_and_header_are_exclusive():
    with pytest.raises(ValueError, match="mutually exclusive"):
        compile_text("x", url=True, header=True)


def test_compile_text_requires_a_string():
    with pytest.raises(TemplateError) as info:
        compile_text(5)
    assert info.value.message == "text template must be a string, got int"


def test_custom_placeholders():
    template = compile_template({"max_tokens": "{MAX_TOKENS}", "stop": "{STOP_WORDS}", "tag": "v{VERSION_2}"})
    assert template.names == frozenset({"MAX_TOKENS", "STOP_WORDS", "VERSION_2"})
    out = template.render({"MAX_TOKENS": 256, "STOP_WORDS": ["\n\n", "###"], "VERSION_2": 2})
    assert out == {"max_tokens": 256, "stop": ["\n\n", "###"], "tag": "v2"}
