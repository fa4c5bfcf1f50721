"""Real pods over CRI: edgecore's own containerd, the busybox images, a CNI bridge, HTTP to a pod.

One managed containerd for the module, as one edge node has one, with its own bridge and a
subnet no interface here uses, so parallel runs and other edge nodes do not collide; each test
removes the sandboxes it made, and the module's teardown removes the rest, stops containerd and
deletes the bridge. Needs root, containerd, runc, the CNI plugins and busybox-static
(scripts/setup.sh installs them).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cri.runtime.v1 import api_pb2 as pb

from common.errors import ConfigError
from edge.edged.containerd import (
    ContainerdError,
    ManagedContainerd,
    import_images,
    socket_path_for,
)
from edge.edged.cri import CRI, CRINotFound
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = "docker.io/kubeedge-py/busybox:latest"
PAUSE = "docker.io/kubeedge-py/pause:latest"
HTTP_PORT = 8080


@dataclass
class Runtime:
    """The module's containerd and where its pods' files live."""

    mc: ManagedContainerd
    names: list[str]
    images_dir: Path
    subnet: ipaddress.IPv4Network
    host_dir: Path


def free_subnet() -> str:
    """A 10.244.x.0/24 no interface on this machine uses (other test runs may be live)."""
    ip = ["ip", "-o", "-4", "addr"]
    used = subprocess.run(ip, capture_output=True, text=True, check=False).stdout
    for _ in range(50):
        third = random.randint(100, 250)
        if f" 10.244.{third}." not in used:
            return f"10.244.{third}.0/24"
    raise RuntimeError("no free 10.244.x.0/24 subnet")


async def remove_all_sandboxes(endpoint: str) -> None:
    async with CRI() as cri:
        await cri.connect(endpoint)
        for sandbox in await cri.list_pod_sandbox():
            await cri.stop_pod_sandbox(sandbox.id)
            await cri.remove_pod_sandbox(sandbox.id)


def teardown(mc: ManagedContainerd, bridge: str) -> None:
    try:
        if mc.pid is not None:
            asyncio.run(remove_all_sandboxes(mc.endpoint))
    finally:
        asyncio.run(mc.stop())
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    if os.geteuid() != 0 or not (shutil.which("containerd") and shutil.which("runc")):
        pytest.skip("needs root with containerd and runc installed")
    images = tmp_path_factory.mktemp("images")
    build = [sys.executable, str(ROOT / "scripts" / "build-image.py"), "--out", str(images)]
    subprocess.run(build, check=True, capture_output=True, timeout=60)
    bridge = f"kept{secrets.token_hex(4)}"  # 12 characters; Linux allows 15
    subnet = free_subnet()
    state = tmp_path_factory.mktemp("node") / "containerd"
    mc = ManagedContainerd(state, bridge=bridge, pod_cidr=subnet)
    try:
        asyncio.run(mc.start())
        names = asyncio.run(import_images(mc.socket_path, images))
        host_dir = tmp_path_factory.mktemp("host")
        yield Runtime(mc, names, images, ipaddress.IPv4Network(subnet), host_dir)
    finally:
        teardown(mc, bridge)


@pytest.fixture
async def cri(runtime: Runtime) -> AsyncIterator[CRI]:
    client = CRI(timeout=20.0)
    await client.connect(runtime.mc.endpoint)
    yield client
    await client.close()


@dataclass
class Pods:
    """Makes sandboxes and containers the way kubelet would; removes the sandboxes at the end."""

    cri: CRI
    runtime: Runtime
    sandboxes: list[str] = field(default_factory=list)

    def sandbox_config(self, name: str) -> pb.PodSandboxConfig:
        uid = secrets.token_hex(8)
        log_dir = self.runtime.host_dir / "pods" / f"default_{name}_{uid}"
        namespaces = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
            hostname=name,
            log_directory=str(log_dir),
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespaces)
            ),
        )

    async def sandbox(self, name: str) -> tuple[str, pb.PodSandboxConfig]:
        config = self.sandbox_config(name)
        sandbox_id = await self.cri.run_pod_sandbox(config)
        self.sandboxes.append(sandbox_id)
        return sandbox_id, config

    async def container(
        self,
        sandbox: tuple[str, pb.PodSandboxConfig],
        name: str,
        command: list[str],
        mounts: list[pb.Mount] | None = None,
        image: str = BUSYBOX,
    ) -> str:
        sandbox_id, sandbox_config = sandbox
        namespaces = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=command,
            mounts=mounts or [],
            log_path=f"{name}/0.log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=namespaces)
            ),
        )
        container_id = await self.cri.create_container(sandbox_id, config, sandbox_config)
        await self.cri.start_container(container_id)
        return container_id

    async def remove_all(self) -> None:
        for sandbox_id in self.sandboxes:
            await self.cri.stop_pod_sandbox(sandbox_id)
            await self.cri.remove_pod_sandbox(sandbox_id)


@pytest.fixture
async def pods(cri: CRI, runtime: Runtime) -> AsyncIterator[Pods]:
    made = Pods(cri, runtime)
    yield made
    await made.remove_all()


async def wait_exited(cri: CRI, container_id: str, timeout: float = 10.0) -> pb.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await cri.container_status(container_id)
        if status.state == pb.CONTAINER_EXITED or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


def http_get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as reply:
        return str(reply.read().decode())


async def http_get_eventually(url: str, attempts: int = 50) -> str:
    for attempt in range(attempts):
        try:
            return await asyncio.to_thread(http_get, url)
        except OSError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


# -- images and the daemon -----------------------------------------------------------------


async def test_images_imported_under_their_names(runtime: Runtime, cri: CRI) -> None:
    """Both archives import into k8s.io under their annotated names, which the CRI resolves."""
    assert runtime.names == [BUSYBOX, PAUSE]
    tags = {tag for image in await cri.list_images() for tag in image.repo_tags}
    assert {BUSYBOX, PAUSE} <= tags
    image = await cri.image_status("kubeedge-py/busybox:latest")  # short name normalizes
    assert image is not None
    assert image.id.startswith("sha256:")
    assert BUSYBOX in image.repo_tags


async def test_import_again_skips_archives_already_imported(runtime: Runtime) -> None:
    """A second import finds every image by digest and never runs ctr (here: /bin/false)."""
    names = await import_images(runtime.mc.socket_path, runtime.images_dir, ctr_bin="false")
    assert names == [BUSYBOX, PAUSE]


def rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], tuple[str, bytes] | None]) -> None:
    """Copy an archive member by member through `edit` (None drops a member)."""
    with tarfile.open(src) as old, tarfile.open(dst, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            changed = edit(member.name, data)
            if changed is None:
                continue
            info = tarfile.TarInfo(changed[0])
            info.size, info.mode = len(changed[1]), 0o644
            new.addfile(info, io.BytesIO(changed[1]))


def dot_slash_archive(src: Path, dst: Path, name: str) -> None:
    """The OCI archive as `tar -C dir -cf x.tar .` writes it: every member `./...`, and another
    image name in index.json (so it is really imported)."""

    def edit(member: str, data: bytes) -> tuple[str, bytes]:
        if member == "index.json":
            index = json.loads(data)
            index["manifests"][0]["annotations"]["io.containerd.image.name"] = name
            data = json.dumps(index).encode()
        return "./" + member, data

    rewrite(src, dst, edit)


def docker_save_archive(src: Path, dst: Path, tag: str) -> None:
    """The same image as `docker save` lays it out: manifest.json, the config, plain layers."""
    with tarfile.open(src) as tar:
        blob = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(blob["index.json"])
    manifest = json.loads(blob["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    config = manifest["config"]["digest"].split(":")[1]
    files = {f"{config}.json": blob[f"blobs/sha256/{config}"]}
    layers = []
    for i, layer in enumerate(manifest["layers"]):
        files[f"layer{i}/layer.tar"] = gzip.decompress(blob["blobs/sha256/" + layer["digest"][7:]])
        layers.append(f"layer{i}/layer.tar")
    files["manifest.json"] = json.dumps(
        [{"Config": f"{config}.json", "RepoTags": [tag], "Layers": layers}]
    ).encode()
    with tarfile.open(dst, "w") as new:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            new.addfile(info, io.BytesIO(data))


async def test_odd_archives_import_and_a_bad_one_is_skipped(
    runtime: Runtime, cri: CRI, tmp_path: Path
) -> None:
    """Regression (issue 10): an OCI archive with `./` members, a `docker save` archive, and
    a truncated archive: the first two import and run by name, the bad ones are skipped with a
    log line and handed to `on_skip` (edged's Node Event) — edged starts either way."""
    odd = tmp_path / "odd"
    odd.mkdir()
    source = runtime.images_dir / "busybox.tar"
    dot_slash_archive(source, odd / "a.tar", "docker.io/kubeedge-py/dotslash:latest")
    docker_save_archive(source, odd / "b.tar", "kubeedge-py/docker-save:latest")
    (odd / "c.tar").write_bytes(source.read_bytes()[:5000])  # cut short
    (odd / "d.tar").write_bytes(b"not an archive at all")
    skipped: list[str] = []
    names = await import_images(
        runtime.mc.socket_path, odd, on_skip=lambda archive, error: skipped.append(archive.name)
    )
    assert names == ["docker.io/kubeedge-py/dotslash:latest", "kubeedge-py/docker-save:latest"]
    assert skipped == ["c.tar", "d.tar"]
    for name in ("kubeedge-py/dotslash:latest", "kubeedge-py/docker-save:latest"):
        image = await cri.image_status(name)
        assert image is not None and image.id.startswith("sha256:"), name


async def test_absent_image_and_unknown_container(cri: CRI) -> None:
    """ImageStatus of an absent image holds no image; an unknown container is CRINotFound."""
    assert await cri.image_status("docker.io/kubeedge-py/absent:latest") is None
    with pytest.raises(CRINotFound) as caught:
        await cri.container_status("no-such-container")
    assert caught.value.method == "ContainerStatus"


def test_long_state_dir_moves_socket_under_run(tmp_path: Path) -> None:
    """A state dir too long for a unix socket path gets a stable short socket under /run."""
    long_dir = tmp_path / ("d" * 90)
    first, second = socket_path_for(long_dir), socket_path_for(long_dir)
    assert first == second
    assert str(first).startswith("/run/kubeedge-py/")
    assert len(f"{first}.ttrpc") < 104
    assert socket_path_for(Path("/srv/edge")) == Path("/srv/edge/containerd.sock")


async def test_start_failure_names_the_log_file(tmp_path: Path) -> None:
    """A containerd that dies at start fails start() with an error naming its log file."""
    mc = ManagedContainerd(
        tmp_path / "containerd",
        bridge="keptfail0",
        pod_cidr="10.244.1.0/24",
        containerd_bin="false",
    )
    with pytest.raises(ContainerdError, match=str(mc.log_path)):
        await mc.start()
    assert mc.pid is None
    assert not mc.pid_path.exists()


async def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    """A bridge name over 15 characters or a CIDR that is not a subnet is refused up front."""
    too_long = ManagedContainerd(tmp_path, bridge="x" * 16, pod_cidr="10.244.1.0/24")
    with pytest.raises(ConfigError, match="bridge"):
        await too_long.start()
    not_subnet = ManagedContainerd(tmp_path, bridge="kep0", pod_cidr="10.244.1.7/24")
    with pytest.raises(ConfigError, match="CIDR"):
        await not_subnet.start()


# -- pods ----------------------------------------------------------------------------------


async def test_sandbox_gets_an_ip_on_the_bridge(runtime: Runtime, cri: CRI, pods: Pods) -> None:
    """A sandbox on the pod network (not the host's) gets an IP from the node's subnet."""
    sandbox_id, _ = await pods.sandbox("ip")
    status = await cri.pod_sandbox_status(sandbox_id)
    assert status.state == pb.SANDBOX_READY
    assert status.linux.namespaces.options.network == pb.POD
    assert ipaddress.IPv4Address(status.network.ip) in runtime.subnet


async def test_httpd_serves_a_hostpath_file(runtime: Runtime, cri: CRI, pods: Pods) -> None:
    """busybox httpd in a pod serves a file from a hostPath mount to the host; stop → EXITED."""
    www = runtime.host_dir / f"www-{secrets.token_hex(4)}"
    www.mkdir()
    body = f"hello from {www.name}\n"
    (www / "index.html").write_text(body)
    sandbox = await pods.sandbox("web")
    mount = pb.Mount(container_path="/www", host_path=str(www), readonly=True)
    command = ["httpd", "-f", "-v", "-p", str(HTTP_PORT), "-h", "/www"]
    container_id = await pods.container(sandbox, "httpd", command, [mount])
    assert (await cri.container_status(container_id)).state == pb.CONTAINER_RUNNING
    ip = (await cri.pod_sandbox_status(sandbox[0])).network.ip
    assert await http_get_eventually(f"http://{ip}:{HTTP_PORT}/index.html") == body
    await cri.stop_container(container_id, timeout=1)
    assert (await cri.container_status(container_id)).state == pb.CONTAINER_EXITED


async def test_failing_container_reports_exit_code_and_logs(cri: CRI, pods: Pods) -> None:
    """A container exiting 3 is EXITED with code 3; its output is in the CRI log file."""
    sandbox = await pods.sandbox("fail")
    container_id = await pods.container(sandbox, "fail", ["sh", "-c", "echo bye; exit 3"])
    status = await wait_exited(cri, container_id)
    assert status.state == pb.CONTAINER_EXITED
    assert status.exit_code == 3
    log_path = Path(status.log_path)
    assert log_path == Path(sandbox[1].log_directory) / "fail" / "0.log"
    lines = (await asyncio.to_thread(log_path.read_text)).splitlines()
    assert lines[-1].endswith(" stdout F bye"), lines


async def test_exec_sync_returns_output_and_exit_code(cri: CRI, pods: Pods) -> None:
    """ExecSync runs in the container and returns stdout, stderr and the exit code."""
    sandbox = await pods.sandbox("exec")
    container_id = await pods.container(sandbox, "sleeper", ["sleep", "3600"])
    reply = await cri.exec_sync(container_id, ["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (reply.stdout, reply.stderr, reply.exit_code) == (b"out\n", b"err\n", 5)
    hostname = await cri.exec_sync(container_id, ["hostname"])
    assert hostname.stdout == b"exec\n"


async def test_pause_image_exits_zero_on_sigterm(cri: CRI, pods: Pods) -> None:
    """The pause image, as its container's PID 1, exits 0 on SIGTERM well before the grace ends."""
    sandbox = await pods.sandbox("pause")
    container_id = await pods.container(sandbox, "pause", [], image=PAUSE)

    async def trapped() -> bool:  # PID 1 catches SIGTERM once the shell has run `trap`
        reply = await cri.exec_sync(container_id, ["cat", "/proc/1/status"])
        caught = [ln for ln in reply.stdout.decode().splitlines() if ln.startswith("SigCgt:")]
        return bool(caught) and bool(int(caught[0].split()[1], 16) & (1 << (signal.SIGTERM - 1)))

    await eventually(trapped, 10, "the pause shell's SIGTERM trap")
    started = time.monotonic()
    await cri.stop_container(container_id, timeout=10)
    assert time.monotonic() - started < 5
    status = await cri.container_status(container_id)
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 0)


async def test_stop_and_remove_leave_nothing(runtime: Runtime, cri: CRI, pods: Pods) -> None:
    """After stop + remove the sandbox and its containers are gone and the pod IP is released."""
    sandbox = await pods.sandbox("gone")
    sandbox_id = sandbox[0]
    await pods.container(sandbox, "sleeper", ["sleep", "3600"])
    ip = (await cri.pod_sandbox_status(sandbox_id)).network.ip
    ipam_file = runtime.mc.ipam_dir / f"kubeedge-py-{runtime.mc.bridge}" / ip
    assert ipam_file.exists()
    await cri.stop_pod_sandbox(sandbox_id)
    await cri.remove_pod_sandbox(sandbox_id)
    pods.sandboxes.remove(sandbox_id)
    assert await cri.list_pod_sandbox(pb.PodSandboxFilter(id=sandbox_id)) == []
    assert await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id)) == []
    assert not ipam_file.exists()


async def test_restart_adopts_the_running_containerd(
    runtime: Runtime, cri: CRI, pods: Pods
) -> None:
    """A new ManagedContainerd on the same state dir reuses the daemon; the pod survives."""
    sandbox_id, _ = await pods.sandbox("survivor")
    again = ManagedContainerd(
        runtime.mc.state_dir, bridge=runtime.mc.bridge, pod_cidr=runtime.mc.pod_cidr
    )
    assert await again.start() == runtime.mc.endpoint
    assert again.pid == runtime.mc.pid
    async with CRI() as fresh:
        await fresh.connect(again.endpoint)
        listed = await fresh.list_pod_sandbox(pb.PodSandboxFilter(id=sandbox_id))
    assert [s.state for s in listed] == [pb.SANDBOX_READY]
