import json

import pytest

from operategpt.errors import BadReply, BadRequest, UpstreamError
from operategpt.gateway.retry import RetryPolicy
from operategpt.templating.extract import ExtractError, Extractor, ExtractSyntaxError, compile_extract

SEED_REPLY = json.dumps(
    {"data": {"items": [{"attributes": {"answer": "Hey there!"}}, {"attributes": {"answer": "second"}}]}}
)

OPENAI_REPLY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Hi from 🤖"}}]})


# --- grammar ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reply", "expected"),
    [
        ("data.items[].attributes.answer", SEED_REPLY, "Hey there!"),
        ('response["data"]["items"][0]["attributes"]["answer"]', SEED_REPLY, "Hey there!"),
        ("response['data']['items'][1]['attributes']['answer']", SEED_REPLY, "second"),
        ("response.data.items[-1].attributes.answer", SEED_REPLY, "second"),
        ("data.items[-2].attributes.answer", SEED_REPLY, "Hey there!"),
        (".data.items[].attributes.answer", SEED_REPLY, "Hey there!"),
        ('response["data"].items[1]["attributes"].answer', SEED_REPLY, "second"),
        ("choices[0].message.content", OPENAI_REPLY, "Hi from 🤖"),
        ("choices[].message.content", OPENAI_REPLY, "Hi from 🤖"),
        ("  choices[0].message.content \n", OPENAI_REPLY, "Hi from 🤖"),
        ("a[][]", '{"a": [["x", "y"], ["z"]]}', "x"),
        ("x[-1]", '{"x": [1, 2, "last"]}', "last"),
        ("[0]", '["first", "second"]', "first"),
        ("[]", '["first", "second"]', "first"),
        ("[-1][0]", '[[1], ["deep"]]', "deep"),
        ('["a.b"].c', '{"a.b": {"c": "dotted"}, "a": {"b": {"c": "wrong"}}}', "dotted"),
        ("['a b[0]'].c", '{"a b[0]": {"c": "spaced"}}', "spaced"),
        ('["say \\"hi\\""]', '{"say \\"hi\\"": "quoted"}', "quoted"),
        ("['it\\'s']", '{"it\'s": "apostrophe"}', "apostrophe"),
        ('["back\\\\slash"]', '{"back\\\\slash": "bs"}', "bs"),
        ('["it\'s"]', '{"it\'s": "other quote"}', "other quote"),
        ('[""]', '{"": "empty key"}', "empty key"),
        ("responses.x", '{"responses": {"x": "plural"}}', "plural"),
        ("responsex", '{"responsex": "glued"}', "glued"),
        ("response.response", '{"response": "nested"}', "nested"),
        ('response["response"]', '{"response": "nested"}', "nested"),
        ("response[0]", '["zero"]', "zero"),
        ("$data.@id-x_1", '{"$data": {"@id-x_1": "chars"}}', "chars"),
        ("données.réponse", '{"données": {"réponse": "unicode"}}', "unicode"),
        ("a.0", '{"a": {"0": "digit key"}}', "digit key"),
        ("x[007]", '{"x": [0,1,2,3,4,5,6,"seven"]}', "seven"),
    ],
)
def test_valid_paths(path, reply, expected):
    extractor = compile_extract(path)
    assert isinstance(extractor, Extractor)
    assert extractor(reply) == expected


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("data..x", "empty key at position 5"),
        (".", "empty key at position 1"),
        ("..", "empty key at position 1"),
        ("data.", "empty key at position 5"),
        ("response.", "empty key at position 9"),
        ("a.[0]", "empty key at position 2"),
        ("[", "unterminated '[' at position 0"),
        ("a[", "unterminated '[' at position 1"),
        ("[abc]", "expected an index, a quoted key or ']' at position 1"),
        ("[ 0]", "expected an index, a quoted key or ']' at position 1"),
        ("[+1]", "expected an index, a quoted key or ']' at position 1"),
        ('["unterminated', "unterminated quoted key at position 1"),
        ('a["x\\"]', "unterminated quoted key at position 2"),
        ('["x\\', "unterminated quoted key at position 1"),
        ("['x\"]", "unterminated quoted key at position 1"),
        ('["a\\nb"]', "invalid escape '\\n' at position 3"),
        ('["x"', "expected ']' at position 4"),
        ('["x"y]', "expected ']' at position 4"),
        ("[0", "expected ']' at position 2"),
        ("[1.5]", "expected ']' at position 2"),
        ("[-]", "expected a digit at position 2"),
        ("[-x]", "expected a digit at position 2"),
        ("[0 ]", "expected ']' at position 2"),
        ("a]", "expected '.' or '[' at position 1, got ']'"),
        ("]", "expected '.' or '[' at position 0, got ']'"),
        ("a b", "expected '.' or '[' at position 1, got ' '"),
        ("a[0]b", "expected '.' or '[' at position 4, got 'b'"),
        ("a[]x", "expected '.' or '[' at position 3, got 'x'"),
        ('"a"', "expected '.' or '[' at position 0, got '\"'"),
        ("response x", "expected '.' or '[' at position 8, got ' '"),
        ("a.b c", "expected '.' or '[' at position 3, got ' '"),
        ("a\tb", "expected '.' or '[' at position 1, got '\t'"),
    ],
)
def test_malformed_paths(path, problem):
    with pytest.raises(ExtractSyntaxError) as info:
        compile_extract(path)
    assert info.value.message == f"invalid response_extract '{path.strip()}': {problem}"
    assert isinstance(info.value, BadRequest)  # a 400
    assert isinstance(info.value, BadRequest)


def test_syntax_error_example_message():
    with pytest.raises(ExtractSyntaxError) as info:
        compile_extract("data..x")
    assert str(info.value) == "invalid response_extract 'data..x': empty key at position 5"


def test_positions_count_in_the_stripped_path():
    with pytest.raises(ExtractSyntaxError) as info:
        compile_extract("   data..x  ")
    assert info.value.message == "invalid response_extract 'data..x': empty key at position 5"


def test_non_string_path_rejected():
    with pytest.raises(ExtractSyntaxError) as info:
        compile_extract(["data"])
    assert info.value.message == "response_extract must be a string, got list"


@pytest.mark.parametrize(
    ("path", "stored"), [("  a.b  ", "a.b"), ("", ""), ("   ", ""), ("response", "response")]
)
def test_path_attribute_is_stripped(path, stored):
    assert compile_extract(path).path == stored


# --- empty path / bare root --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "   ", "response", " response "])
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('"Hey there!"', "Hey there!"),
        ('  "padded"\n', "padded"),
        ('"esc \\"q\\" \\n \\u00e9 \\ud83e\\udd16"', 'esc "q" \n é 🤖'),
        ('""', ""),
        ("Hey there!", "Hey there!"),
        ("", ""),
        ('{"a": 1}', '{"a": 1}'),
        ("[1, 2]", "[1, 2]"),
        ("42", "42"),
        ("null", "null"),
        ('"unterminated', '"unterminated'),
        ('"a" "b"', '"a" "b"'),
        ('"quoted" then text', '"quoted" then text'),
        ("<html>error</html>", "<html>error</html>"),
    ],
)
def test_empty_path(path, reply, expected):
    assert compile_extract(path)(reply) == expected


# --- leaves ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "text"),
    [
        ("plain", "plain"),
        ("", ""),
        ('with "quotes" and \\ and\nnewline', 'with "quotes" and \\ and\nnewline'),
        (42, "42"),
        (-1.5, "-1.5"),
        (1e100, "1e+100"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ([1, "a", None, {"b": True}], '[1,"a",null,{"b":true}]'),
        ({"k": "v", "n": [1, 2]}, '{"k":"v","n":[1,2]}'),
        ({"é": "中🤖"}, '{"é":"中🤖"}'),
        ([], "[]"),
        ({}, "{}"),
    ],
)
def test_leaves(leaf, text):
    reply = json.dumps({"answer": leaf})
    assert compile_extract("answer")(reply) == text
    assert compile_extract('response["answer"]')(reply) == text


def test_huge_integer_leaf_kept_exact():
    assert compile_extract("n")('{"n": 123456789012345678901234567890}') == "123456789012345678901234567890"


# --- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reply", "segment", "problem"),
    [
        ("data.items[].answer", SEED_REPLY, ".answer", "key not found"),
        ("data.missing", SEED_REPLY, ".missing", "key not found"),
        ("nope", SEED_REPLY, "nope", "key not found"),
        ('["nope"]', SEED_REPLY, '["nope"]', "key not found"),
        ("data[0]", SEED_REPLY, "[0]", "expected an array, got object"),
        ("data.items.attributes", SEED_REPLY, ".attributes", "expected an object, got array"),
        ("a.b", '{"a": "str"}', ".b", "expected an object, got string"),
        ("a[]", '{"a": "str"}', "[]", "expected an array, got string"),
        ("a.b", '{"a": 1}', ".b", "expected an object, got number"),
        ("a.b", '{"a": 1.5}', ".b", "expected an object, got number"),
        ("a.b", '{"a": true}', ".b", "expected an object, got boolean"),
        ("a.b", '{"a": null}', ".b", "expected an object, got null"),
        ("a", '["x"]', "a", "expected an object, got array"),
        ("a", '"just a string"', "a", "expected an object, got string"),
        ("a[]", '{"a": []}', "[]", "array is empty"),
        ("a[2]", '{"a": [1, 2]}', "[2]", "index out of range (array has 2 elements)"),
        ("a[-3]", '{"a": [1, 2]}', "[-3]", "index out of range (array has 2 elements)"),
        ("a[0]", '{"a": []}', "[0]", "index out of range (array has 0 elements)"),
        ("response.a", "[]", ".a", "expected an object, got array"),
        ("x[][]", '{"x": [[]]}', "[]", "array is empty"),
    ],
)
def test_path_mismatch(path, reply, segment, problem):
    with pytest.raises(ExtractError) as info:
        compile_extract(path)(reply)
    assert info.value.message == f"response_extract '{path}' failed at segment '{segment}': {problem}"
    assert isinstance(info.value, BadReply)  # a 502
    assert not RetryPolicy(2).fails_over(info.value, ANY_WORKER), "another worker would not help"
    assert isinstance(info.value, UpstreamError)


def test_mismatch_example_message():
    with pytest.raises(ExtractError) as info:
        compile_extract("data.items[].answer")(SEED_REPLY)
    assert (
        str(info.value) == "response_extract 'data.items[].answer' failed at segment '.answer': key not found"
    )


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        ("Hey there!", "Expecting value at line 1 column 1"),
        ("", "Expecting value at line 1 column 1"),
        ('{"a": 1', "Expecting ',' delimiter at line 1 column 8"),
        ('{"a": 1}\ntrailing', "Extra data at line 2 column 1"),
        ("<html>\n<body>502</body>", "Expecting value at line 1 column 1"),
    ],
)
def test_non_json_reply_with_path(reply, detail):
    with pytest.raises(ExtractError) as info:
        compile_extract("a")(reply)
    assert info.value.message == f"response_extract 'a' failed: upstream reply is not JSON: {detail}"
    assert isinstance(info.value, BadReply)  # a 502
    assert not RetryPolicy(2).fails_over(info.value, ANY_WORKER), "another worker would not help"


def test_too_deep_reply_with_path():
    reply = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ExtractError) as info:
        compile_extract("[0]")(reply)
    expected = "response_extract '[0]' failed: upstream reply is not JSON: nested too deeply"
    assert info.value.message == expected


def test_extractor_is_reusable():
    extractor = compile_extract("data.items[].attributes.answer")
    for _ in range(3):
        assert extractor(SEED_REPLY) == "Hey there!"
    with pytest.raises(ExtractError):
        extractor("{}")
    assert extractor(SEED_REPLY) == "Hey there!"


class ANY_WORKER:
    retry_on_timeout = False
