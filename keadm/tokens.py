"""Join tokens, as `keadm gettoken` and `keadm token` handle them: Secrets in namespace
kubeedge that cloudcore checks (and deletes) when a node spends one. And `keadm node revoke`:
a time per node in the Secret kubeedge/edge-node-revocations, before which that node's
certificates are refused.

Everything goes through the cluster's API with the caller's kubeconfig (an admin's); nothing
here talks to cloudcore. The CA hash comes from the edge CA Secret cloudcore creates at its
first start.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common import certs, join, kubeclient
from common.errors import ConfigError

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class TokenError(Exception):
    """What the user asked cannot be done; the message says why."""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    expires: str
    node_name: str
    expired: bool


def parse_duration(text: str) -> dt.timedelta:
    """'24h', '90m', '1h30m', '45s' (Go's style, as kubeadm's --ttl) or plain seconds."""
    if text.isdigit():
        return dt.timedelta(seconds=int(text))
    found = _DURATION.match(text)
    if not text or found is None:
        raise TokenError(f"--ttl {text!r}: want a duration like 24h, 90m, 1h30m or seconds")
    hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def core_api(kubeconfig: Path) -> client.CoreV1Api:
    try:
        api = kubeclient.ApiClient(kubeconfig)
    except ConfigError as exc:
        raise TokenError(str(exc)) from None
    return client.CoreV1Api(api)


def ca_hash(core: client.CoreV1Api, wait: float = 0.0) -> str:
    """The SHA-256 of the edge CA, waiting up to `wait` seconds for cloudcore to create it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            secret = core.read_namespaced_secret(join.CA_SECRET, join.NAMESPACE)
            break
        except ApiException as exc:
            if exc.status != 404:
                raise TokenError(f"reading the edge CA: {_api_error(exc)}") from None
            if time.monotonic() >= deadline:
                raise TokenError(
                    f"no edge CA yet (Secret {join.NAMESPACE}/{join.CA_SECRET}): cloudcore "
                    "creates it when it first starts; start cloudcore, then ask again"
                ) from None
            time.sleep(0.2)
    pem = base64.b64decode((secret.data or {}).get("tls.crt", ""))
    return certs.fingerprint(certs.load_cert(pem, "the edge CA"))


def create(
    core: client.CoreV1Api, ttl: dt.timedelta, node_name: str = "", wait: float = 0.0
) -> join.JoinToken:
    if ttl <= dt.timedelta(0):
        raise TokenError("--ttl must be positive")
    token = join.JoinToken.new(ca_hash(core, wait))
    body = join.token_secret(token, certs.now() + ttl, node_name)
    try:
        core.create_namespaced_secret(join.NAMESPACE, body)  # type: ignore[arg-type]  # a dict is sent as is
    except ApiException as exc:
        raise TokenError(f"creating the token: {_api_error(exc)}") from None
    return token


def delete(core: client.CoreV1Api, token_id: str) -> None:
    token_id = token_id.split(".", 1)[0]  # a whole token works as well as its id
    try:
        secret = core.read_namespaced_secret(join.TOKEN_SECRET_PREFIX + token_id, join.NAMESPACE)
        if secret.type != join.TOKEN_SECRET_TYPE:
            raise TokenError(f"{token_id!r} is not a join token")
        core.delete_namespaced_secret(join.TOKEN_SECRET_PREFIX + token_id, join.NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            raise TokenError(
                f"no join token {token_id!r} (already used, revoked or expired)"
            ) from None
        raise TokenError(f"deleting token {token_id!r}: {_api_error(exc)}") from None


def list_tokens(core: client.CoreV1Api) -> list[TokenInfo]:
    try:
        found = core.list_namespaced_secret(
            join.NAMESPACE, field_selector=f"type={join.TOKEN_SECRET_TYPE}"
        )
    except ApiException as exc:
        raise TokenError(f"listing tokens: {_api_error(exc)}") from None
    out = []
    for secret in found.items:
        fields = join.secret_fields({"data": secret.data})
        expires = fields.get("expiration", "")
        try:
            expired = join.parse_expiry(expires) <= certs.now()
        except ValueError:
            expired = True
        out.append(
            TokenInfo(fields.get("token-id", "?"), expires, fields.get("node-name", ""), expired)
        )
    return sorted(out, key=lambda t: t.expires)


def revoke_node(core: client.CoreV1Api, node: str, attempts: int = 5) -> dt.datetime:
    """Refuse every certificate of `node` issued up to now; returns that time."""
    when = certs.now().replace(microsecond=0)
    value = base64.b64encode(join.format_time(when).encode()).decode()
    for _ in range(attempts):  # read-modify-write; a concurrent revoke makes us read again
        try:
            secret = core.read_namespaced_secret(join.REVOCATION_SECRET, join.NAMESPACE)
        except ApiException as exc:
            if exc.status != 404:
                raise TokenError(f"reading revocations: {_api_error(exc)}") from None
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": join.REVOCATION_SECRET, "namespace": join.NAMESPACE},
                "data": {node: value},
            }
            if _try(core.create_namespaced_secret, join.NAMESPACE, body):
                return when
            continue
        secret.data = {**(secret.data or {}), node: value}
        if _try(core.replace_namespaced_secret, join.REVOCATION_SECRET, join.NAMESPACE, secret):
            return when
    raise TokenError("revocations kept changing under us; try again")


def _try(call: Any, *args: Any) -> bool:
    """True if the write went through, False on a conflict (someone wrote first)."""
    try:
        call(*args)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise TokenError(f"writing revocations: {_api_error(exc)}") from None
    return True


def _api_error(exc: ApiException) -> str:
    body: Any = exc.body or exc.reason
    return f"HTTP {exc.status}: {body}"
