"""One exception tree for kubeedge-py; third-party errors are wrapped at the module that owns them.

KubeEdgeError
├── TemporaryError        retrying later may succeed (link down, peer busy, timeout)
│   ├── LinkDownError     the hub stream is not connected
│   └── ResponseTimeout   send_sync got no reply in time
└── PermanentError        retrying the same thing fails the same way
    ├── BadMessage        an envelope that cannot be handled (no body, bad route, ...)
    ├── UnknownModule     the bus has no module or group by that name
    └── ConfigError       settings that cannot work (bad address, unreadable config file)
"""


class KubeEdgeError(Exception):
    """Base of every error kubeedge-py raises on purpose."""


class TemporaryError(KubeEdgeError):
    """Retrying later may succeed."""


class PermanentError(KubeEdgeError):
    """Retrying the same operation fails the same way."""


class LinkDownError(TemporaryError):
    """The hub stream to the other side is not connected."""


class ResponseTimeout(TemporaryError):
    """A synchronous send got no reply within its timeout."""


class BadMessage(PermanentError):
    """An envelope that cannot be handled; `code` is the HTTP-like code sent back."""

    def __init__(self, reason: str, code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class UnknownModule(PermanentError):
    """The bus has no module or group by that name."""


class ConfigError(PermanentError):
    """Settings that cannot work."""
