"""Errors from the Kubernetes API, wrapped where the kubernetes client is called (cloud/kube.py).

KubeAPIError              the API answered with an error, or could not be reached
├── APIUnavailable        (TemporaryError) unreachable, timed out, 5xx, 429: retry later
└── APIRejected           (PermanentError) any other 4xx: the same request fails the same way
    ├── NotFound          404
    ├── Conflict          409: AlreadyExists, a failed precondition, a stale resourceVersion
    └── Gone              410: a watch or list continuation from a compacted version
"""

from __future__ import annotations

from common.errors import KubeEdgeError, PermanentError, TemporaryError


class KubeAPIError(KubeEdgeError):
    """The Kubernetes API said no, or could not be reached (`status` 0)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class APIUnavailable(KubeAPIError, TemporaryError):
    """Unreachable, timed out, overloaded (429) or failing (5xx)."""


class APIRejected(KubeAPIError, PermanentError):
    """A 4xx answer other than 429."""


class NotFound(APIRejected):
    """404."""


class Conflict(APIRejected):
    """409: already exists, precondition failed, or a stale resourceVersion."""


class Gone(APIRejected):
    """410: the requested resourceVersion is older than the server's history."""


def from_status(status: int, message: str, reason: str = "") -> KubeAPIError:
    """The exception type for an HTTP status from the API."""
    if status == 404:
        return NotFound(message, status, reason)
    if status == 409:
        return Conflict(message, status, reason)
    if status == 410:
        return Gone(message, status, reason)
    if status == 429 or status >= 500 or status == 0:
        return APIUnavailable(message, status, reason)
    return APIRejected(message, status, reason)
