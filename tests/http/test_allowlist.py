import pytest

from operategpt.http.allowlist import HostAllowlist


def test_names_wildcards_and_ranges():
    allow = HostAllowlist(["api.openai.com", "*.internal", "10.0.0.0/8", "127.0.0.1", "::1", " "])
    assert allow
    assert allow.allows_name("api.openai.com")
    assert allow.allows_name("API.OpenAI.com.")
    assert allow.allows_name("gpu1.internal")
    assert not allow.allows_name("internal")
    assert not allow.allows_name("evil.com")
    assert allow.allows_name("10.2.3.4")
    assert allow.allows_name("[::1]")
    assert not allow.allows_name("169.254.169.254")
    assert allow.allows_address("127.0.0.1")
    assert not allow.allows_address("127.0.0.2")


def test_a_name_is_allowed_when_all_its_addresses_are():
    assert HostAllowlist(["127.0.0.0/8", "::1"]).allows_host("localhost", 80)
    assert not HostAllowlist(["10.0.0.0/8"]).allows_host("localhost", 80)
    assert not HostAllowlist(["10.0.0.0/8"]).allows_host("no-such-host.invalid", 80)


def test_empty_list_is_falsy_and_bad_entries_are_refused():
    assert not HostAllowlist([])
    with pytest.raises(ValueError, match="neither a host name nor a CIDR"):
        HostAllowlist(["10.0.0.0/99"])
