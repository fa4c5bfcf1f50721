"""A thin async client for a CRI runtime (containerd) over its unix socket.

What it does: one grpc.aio channel to the runtime's socket with the RuntimeService and
ImageService stubs of CRI `runtime.v1`; a method per RPC edged uses, each with a deadline
(`timeout`, longer `pull_timeout` for PullImage, the grace period plus `timeout` for
StopContainer and ExecSync); gRPC failures leave as `CRIError`s naming the method and code.

What it does not: decide what a pod is, retry, or cache. The pod manager builds the
PodSandboxConfig/ContainerConfig messages and owns retries; `CRITemporaryError` tells it that
trying again later may help, `CRIPermanentError` (and its `CRINotFound`) that it will not.

Why: edged is the one module that touches the CRI stubs (STYLE.md: a third-party library is
touched by the module that owns it); keeping the gRPC details here leaves the pod manager with
plain methods and kubeedge-py's own error tree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import grpc
from cri.runtime.v1 import api_pb2, api_pb2_grpc
from google.protobuf.message import Message

from common.errors import KubeEdgeError, PermanentError, TemporaryError

T = TypeVar("T", bound=Message)

# Codes where the runtime may succeed later: it is restarting, busy, or failed inside runc /
# CNI (containerd reports those as UNKNOWN) — the pod manager backs off and tries again.
TEMPORARY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
NO_LIMIT = 24 * 3600.0  # the gRPC deadline of an ExecSync that asked for no timeout
IMAGE_METHODS = frozenset({"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"})
# Reconnect quickly after the runtime restarts instead of gRPC's default backoff (up to 120 s).
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class CRIError(KubeEdgeError):
    """A CRI call failed; `method` is the RPC name, `code` the gRPC status code."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"CRI {method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class CRITemporaryError(CRIError, TemporaryError):
    """The runtime was unreachable, slow or failed in a way that may pass."""


class CRIPermanentError(CRIError, PermanentError):
    """The runtime refused the request; the same request fails the same way."""


class CRINotFound(CRIPermanentError):
    """The sandbox, container or image named does not exist."""


def cri_error(method: str, exc: grpc.aio.AioRpcError) -> CRIError:
    """Map a gRPC failure to kubeedge-py's error tree."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return CRINotFound(method, code, details)
    if code in TEMPORARY_CODES:
        return CRITemporaryError(method, code, details)
    return CRIPermanentError(method, code, details)


def image_spec(image: str | api_pb2.ImageSpec) -> api_pb2.ImageSpec:
    return image if isinstance(image, api_pb2.ImageSpec) else api_pb2.ImageSpec(image=image)


def channel_target(endpoint: str) -> str:
    """`unix:///run/x.sock` or a bare `/run/x.sock` → the gRPC target `unix:///run/x.sock`."""
    if endpoint.startswith("unix://"):
        return endpoint
    if endpoint.startswith("/"):
        return f"unix://{endpoint}"
    raise ValueError(f"CRI endpoint must be unix:///path or /path, not {endpoint!r}")


class CRI:
    """RuntimeService + ImageService of one CRI runtime; `connect()` before use."""

    def __init__(self, *, timeout: float = 30.0, pull_timeout: float = 600.0) -> None:
        self.timeout = timeout
        self.pull_timeout = pull_timeout
        self.endpoint = ""
        self._channel: grpc.aio.Channel | None = None
        self._runtime: Any = None
        self._images: Any = None

    async def connect(self, endpoint: str) -> None:
        """Open the channel (lazily: the first call connects, and reconnects after a restart)."""
        await self.close()
        self.endpoint = endpoint
        self._channel = grpc.aio.insecure_channel(channel_target(endpoint), options=CHANNEL_OPTIONS)
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._images = api_pb2_grpc.ImageServiceStub(self._channel)

    async def close(self) -> None:
        self._runtime = self._images = None
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> CRI:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self, method: str, request: Message, reply: type[T], timeout: float | None = None
    ) -> T:
        stub = self._images if method in IMAGE_METHODS else self._runtime
        if stub is None:
            raise CRITemporaryError(method, grpc.StatusCode.UNAVAILABLE, "not connected")
        try:
            deadline = self.timeout if timeout is None else timeout
            result = await getattr(stub, method)(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise cri_error(method, exc) from exc
        return cast(T, result)

    # -- runtime ---------------------------------------------------------------------------

    async def version(self, timeout: float | None = None) -> api_pb2.VersionResponse:
        request = api_pb2.VersionRequest(version="v1")
        return await self._call("Version", request, api_pb2.VersionResponse, timeout)

    async def status(self, verbose: bool = False) -> api_pb2.StatusResponse:
        request = api_pb2.StatusRequest(verbose=verbose)
        return await self._call("Status", request, api_pb2.StatusResponse)

    # -- pod sandboxes ---------------------------------------------------------------------

    async def run_pod_sandbox(
        self, config: api_pb2.PodSandboxConfig, runtime_handler: str = ""
    ) -> str:
        """Create and start a sandbox (pause container + network); returns its id."""
        request = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        reply = await self._call("RunPodSandbox", request, api_pb2.RunPodSandboxResponse)
        return reply.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        request = api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        await self._call("StopPodSandbox", request, api_pb2.StopPodSandboxResponse)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        request = api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        await self._call("RemovePodSandbox", request, api_pb2.RemovePodSandboxResponse)

    async def pod_sandbox_status(self, sandbox_id: str) -> api_pb2.PodSandboxStatus:
        """State, pod IP (`.network.ip`), creation time, labels of one sandbox."""
        request = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        reply = await self._call("PodSandboxStatus", request, api_pb2.PodSandboxStatusResponse)
        return reply.status

    async def list_pod_sandbox(
        self, filter: api_pb2.PodSandboxFilter | None = None
    ) -> list[api_pb2.PodSandbox]:
        request = api_pb2.ListPodSandboxRequest(filter=filter)
        reply = await self._call("ListPodSandbox", request, api_pb2.ListPodSandboxResponse)
        return list(reply.items)

    # -- containers ------------------------------------------------------------------------

    async def create_container(
        self,
        sandbox_id: str,
        config: api_pb2.ContainerConfig,
        sandbox_config: api_pb2.PodSandboxConfig,
    ) -> str:
        """Create a container in a sandbox (not started); returns its id."""
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
        )
        reply = await self._call("CreateContainer", request, api_pb2.CreateContainerResponse)
        return reply.container_id

    async def start_container(self, container_id: str) -> None:
        request = api_pb2.StartContainerRequest(container_id=container_id)
        await self._call("StartContainer", request, api_pb2.StartContainerResponse)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (the pod's grace period)."""
        request = api_pb2.StopContainerRequest(container_id=container_id, timeout=timeout)
        deadline = timeout + self.timeout
        await self._call("StopContainer", request, api_pb2.StopContainerResponse, deadline)

    async def remove_container(self, container_id: str) -> None:
        request = api_pb2.RemoveContainerRequest(container_id=container_id)
        await self._call("RemoveContainer", request, api_pb2.RemoveContainerResponse)

    async def list_containers(
        self, filter: api_pb2.ContainerFilter | None = None
    ) -> list[api_pb2.Container]:
        request = api_pb2.ListContainersRequest(filter=filter)
        reply = await self._call("ListContainers", request, api_pb2.ListContainersResponse)
        return list(reply.containers)

    async def container_status(self, container_id: str) -> api_pb2.ContainerStatus:
        """State, exit code, reason, timestamps, image ref and log path of one container."""
        request = api_pb2.ContainerStatusRequest(container_id=container_id)
        reply = await self._call("ContainerStatus", request, api_pb2.ContainerStatusResponse)
        return reply.status

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: float = 10.0
    ) -> api_pb2.ExecSyncResponse:
        """Run `cmd` in the container and wait at most `timeout` s (0 = no limit).

        The CRI counts whole seconds, so a fraction rounds up; the gRPC deadline adds the
        client's own `timeout` on top, leaving the runtime time to report the timeout itself.
        """
        seconds = math.ceil(timeout) if timeout > 0 else 0
        request = api_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=seconds)
        deadline = seconds + self.timeout if seconds else NO_LIMIT
        return await self._call("ExecSync", request, api_pb2.ExecSyncResponse, deadline)

    async def reopen_container_log(self, container_id: str) -> None:
        request = api_pb2.ReopenContainerLogRequest(container_id=container_id)
        await self._call("ReopenContainerLog", request, api_pb2.ReopenContainerLogResponse)

    # -- images ----------------------------------------------------------------------------

    async def pull_image(
        self,
        image: str | api_pb2.ImageSpec,
        auth: api_pb2.AuthConfig | None = None,
        sandbox_config: api_pb2.PodSandboxConfig | None = None,
    ) -> str:
        """Pull an image through the runtime; returns its image ref (the image id)."""
        request = api_pb2.PullImageRequest(
            image=image_spec(image), auth=auth, sandbox_config=sandbox_config
        )
        reply = await self._call("PullImage", request, api_pb2.PullImageResponse, self.pull_timeout)
        return reply.image_ref

    async def image_status(self, image: str | api_pb2.ImageSpec) -> api_pb2.Image | None:
        """The image (id, repo tags, size), or None when the runtime does not have it."""
        request = api_pb2.ImageStatusRequest(image=image_spec(image))
        reply = await self._call("ImageStatus", request, api_pb2.ImageStatusResponse)
        return reply.image if reply.HasField("image") else None

    async def list_images(self, filter: api_pb2.ImageFilter | None = None) -> list[api_pb2.Image]:
        request = api_pb2.ListImagesRequest(filter=filter)
        reply = await self._call("ListImages", request, api_pb2.ListImagesResponse)
        return list(reply.images)

    async def remove_image(self, image: str | api_pb2.ImageSpec) -> None:
        request = api_pb2.RemoveImageRequest(image=image_spec(image))
        await self._call("RemoveImage", request, api_pb2.RemoveImageResponse)
