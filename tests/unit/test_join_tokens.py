"""Join tokens and proofs: what a user types and what the bootstrap RPC binds together."""

from __future__ import annotations

import datetime as dt

import pytest

from common import certs, join
from keadm.tokens import TokenError, parse_duration

HASH = "ab" * 32


def test_a_new_token_reads_back_as_itself() -> None:
    token = join.JoinToken.new(HASH)
    assert join.JoinToken.parse(str(token)) == token
    assert join.JoinToken.parse(f"  {token}\n") == token  # pasted with a newline
    assert token.secret_name == f"edge-join-token-{token.id}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abcdef",
        "abcdef.0123456789abcdef",
        f"ABCDEF.0123456789abcdef.{HASH}",
        f"abcdef.0123456789abcde.{HASH}",
        f"abcdef.0123456789abcdef.{HASH[:-1]}",
    ],
)
def test_anything_else_is_refused_with_the_expected_shape(text: str) -> None:
    with pytest.raises(join.TokenError, match=r"ID\.SECRET\.CAHASH"):
        join.JoinToken.parse(text)


def test_the_request_proof_binds_secret_node_and_csr() -> None:
    csr = certs.new_csr(certs.new_key(), certs.name("system:node:a"))
    other = certs.new_csr(certs.new_key(), certs.name("system:node:a"))
    proof = join.request_proof("s" * 16, "a", csr)
    assert join.proof_matches(proof, join.request_proof("s" * 16, "a", csr))
    assert not join.proof_matches(proof, join.request_proof("t" * 16, "a", csr))
    assert not join.proof_matches(proof, join.request_proof("s" * 16, "b", csr))
    assert not join.proof_matches(proof, join.request_proof("s" * 16, "a", other))
    # The response proof cannot be replayed as a request proof, nor the other way round.
    assert not join.proof_matches(proof, join.response_proof("s" * 16, b"a", csr))


def test_the_token_secret_carries_expiry_and_node() -> None:
    token = join.JoinToken.new(HASH)
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    fields = join.secret_fields(join.token_secret(token, expires, "edge-7"))
    assert fields["token-secret"] == token.secret
    assert join.parse_expiry(fields["expiration"]) == expires
    assert fields["node-name"] == "edge-7" and fields["usage"] == "join"


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("10", 10)]
)
def test_ttl_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1d", "h", "-5", "1.5h"])
def test_bad_ttl_is_refused(text: str) -> None:
    with pytest.raises(TokenError, match="duration"):
        parse_duration(text)


def test_a_csr_must_be_signed_and_p256() -> None:
    csr = certs.new_csr(certs.new_key(), certs.name("system:node:a"))
    assert certs.common_name(certs.load_csr(csr)) == "system:node:a"
    broken = csr[:-8] + bytes(8)  # signature bytes zeroed
    with pytest.raises(certs.CertError):
        certs.load_csr(broken)
    with pytest.raises(certs.CertError):
        certs.load_csr(b"not a csr")


@pytest.mark.parametrize("token_id", ["abcdef\n", "abc", "ABCDEF", "../ca-x", "abcdefg"])
def test_token_ids_are_exactly_six_of_a_to_z_0_to_9(token_id: str) -> None:
    assert not join.valid_token_id(token_id)
    assert join.valid_token_id("abc123")


@pytest.mark.parametrize("name", ["edge-1\n", "-edge", "Edge", "a" * 254, ""])
def test_node_names_are_checked_whole(name: str) -> None:
    from common.names import valid_node_name

    assert not valid_node_name(name)
    assert valid_node_name("edge-1.site-a")
