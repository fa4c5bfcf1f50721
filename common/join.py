"""Join tokens and the proofs the bootstrap RPC carries, shared by keadm (makes tokens),
cloudcore (checks them) and edgecore (spends one).

A token reads `ID.SECRET.CAHASH`: ID (6 of [a-z0-9]) names the token's Secret
`kubeedge/edge-join-token-ID`, SECRET (16 of [a-z0-9]) never crosses the wire, CAHASH is the
SHA-256 of the edge CA's DER, so the node can tell the real cloud's CA from a forged one. The
Secret holds the secret, its expiry and, optionally, the only node name it may join as.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

NAMESPACE = "kubeedge"
CA_SECRET = "cloudcore-ca"
TOKEN_SECRET_PREFIX = "edge-join-token-"
TOKEN_SECRET_TYPE = "kubeedge.io/join-token"
# One Secret: node name -> time (RFC 3339); that node's certificates issued then or before
# are refused (`keadm node revoke`).
REVOCATION_SECRET = "edge-node-revocations"
# Who a node's certificate says it is, as the kubelet's does.
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})\.([0-9a-f]{64})")
_TOKEN_ID = re.compile(r"[a-z0-9]{6}")
_REQUEST = b"kubeedge-py join request\0"
_RESPONSE = b"kubeedge-py join response\0"


class TokenError(ValueError):
    """A string that is not a join token."""


@dataclass(frozen=True)
class JoinToken:
    id: str
    secret: str
    ca_hash: str

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        found = _TOKEN.fullmatch(text.strip())
        if found is None:
            raise TokenError(
                "a join token reads ID.SECRET.CAHASH (6 and 16 of [a-z0-9], then 64 hex digits); "
                "`keadm gettoken` prints one"
            )
        return cls(*found.groups())

    @classmethod
    def new(cls, ca_hash: str) -> JoinToken:
        def pick(n: int) -> str:
            return "".join(secrets.choice(_ALPHABET) for _ in range(n))

        return cls(pick(6), pick(16), ca_hash)

    def __str__(self) -> str:
        return f"{self.id}.{self.secret}.{self.ca_hash}"

    @property
    def secret_name(self) -> str:
        return TOKEN_SECRET_PREFIX + self.id


def valid_token_id(token_id: str) -> bool:
    return bool(_TOKEN_ID.fullmatch(token_id))


def token_secret(token: JoinToken, expires: dt.datetime, node_name: str = "") -> dict[str, Any]:
    """The Secret that makes `token` valid until `expires` (for `node_name` only, if given)."""
    data = {
        "token-id": token.id,
        "token-secret": token.secret,
        "expiration": format_time(expires),
        "usage": "join",
    }
    if node_name:
        data["node-name"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": token.secret_name, "namespace": NAMESPACE},
        "type": TOKEN_SECRET_TYPE,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def secret_fields(obj: dict[str, Any]) -> dict[str, str]:
    """A token Secret's data, decoded (fields that do not decode are left out)."""
    out = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, TypeError):
            continue
    return out


def parse_expiry(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shipped_to_nodes(namespace: str, name: str) -> bool:
    """Whether a Secret may ever be sent to an edge node: never the edge CA, join tokens or
    revocations, whatever a pod references."""
    if namespace != NAMESPACE:
        return True
    return name not in (CA_SECRET, REVOCATION_SECRET) and not name.startswith(TOKEN_SECRET_PREFIX)


def request_proof(secret: str, node_name: str, csr_der: bytes) -> bytes:
    return _mac(secret, _REQUEST + node_name.encode() + b"\0" + csr_der)


def response_proof(secret: str, cert_pem: bytes, ca_pem: bytes) -> bytes:
    return _mac(secret, _RESPONSE + cert_pem + b"\0" + ca_pem)


def proof_matches(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)


def node_user(node_name: str) -> str:
    return NODE_USER_PREFIX + node_name


def _mac(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()
