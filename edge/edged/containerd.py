"""edgecore's own containerd: config, start or adopt, stop; and air-gapped image import.

What it does: `ManagedContainerd` writes a private containerd config under one state dir
(root, state, socket, runc state, CNI config, host-local IPAM data, netns mounts — nothing
machine-wide), starts containerd detached in its own session so that it and its pods outlive
edgecore (a runtime is not a child of the kubelet either), records its pid, and on the next
start adopts the daemon still answering on that socket instead of starting another.
`import_images` loads OCI archives (scripts/build-image.py) into the CRI's `k8s.io` namespace.

What it does not: talk CRI beyond Version/Status/ImageStatus (edged/cri.py), create pods, or
supervise a containerd someone else started (`--runtime-endpoint` points edged at that).
`stop()` is for reset and teardown only; pods keep running in their shims after it.

Why: as k3s does, an edge node should run with nothing but the Debian packages; and several
edge nodes on one machine (tests) each need their own socket, state, bridge name, subnet and
IPAM dataDir, since host-local's default folder and a shared bridge name would collide.
Facts of this machine baked in: the CRI must not lower oom_score_adj
(`restrict_oom_score_adj`), cgroups are managed by cgroupfs (no systemd), and overlay mounts
are probed before choosing the overlayfs snapshotter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError, TemporaryError
from edge.edged.cri import CRI, CRIError, CRIPermanentError
from edge.private import open_append, private_dir, private_file

log = logging.getLogger(__name__)

PAUSE_IMAGE = "docker.io/kubeedge-py/pause:latest"
CNI_BIN_DIR = "/usr/lib/cni"
# sun_path is 108 bytes on Linux (104 on BSDs) including the NUL; containerd also listens on
# `<socket>.ttrpc`, so that longer name is the one that must fit.
UNIX_PATH_MAX = 104
SOCKET_FALLBACK_DIR = Path("/run/kubeedge-py")
BRIDGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
)
K8S_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin serves


class ContainerdError(TemporaryError):
    """The managed containerd did not start or answer in time (see its log file)."""


def toml_str(value: str | Path) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(str(value))


def socket_path_for(state_dir: Path) -> Path:
    """`{state_dir}/containerd.sock`, or a short stable path under /run when that is too long."""
    preferred = state_dir / "containerd.sock"
    if len(os.fsencode(f"{preferred}.ttrpc")) < UNIX_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return SOCKET_FALLBACK_DIR / digest / "containerd.sock"


def overlay_works(scratch: Path) -> bool:
    """Mount a throwaway overlay under `scratch`; some sandboxes (nested overlay) refuse it."""
    lower, upper, work, merged = (scratch / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    works = _run("mount", "-t", "overlay", "overlay", "-o", opts, str(merged))
    if not works or _run("umount", str(merged)):  # never delete through a live mount
        shutil.rmtree(scratch, ignore_errors=True)
    return works


def _run(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def cni_conflist(name: str, bridge: str, pod_cidr: str, ipam_dir: Path) -> dict[str, object]:
    """One bridge network; containerd's CRI adds the pod's loopback itself (go-cni)."""
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": pod_cidr}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": str(ipam_dir),
    }
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone); reaps it if it is our child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class ManagedContainerd:
    """A containerd of our own under `state_dir`, started detached or adopted if running."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        bridge: str,
        pod_cidr: str,
        containerd_bin: str = "containerd",
        log_path: Path | str | None = None,
        sandbox_image: str = PAUSE_IMAGE,
        start_timeout: float = 30.0,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.bridge = bridge
        self.pod_cidr = pod_cidr
        self.containerd_bin = containerd_bin
        self.log_path = Path(log_path) if log_path else self.state_dir / "containerd.log"
        self.sandbox_image = sandbox_image
        self.start_timeout = start_timeout
        self.socket_path = socket_path_for(self.state_dir)
        self.config_path = self.state_dir / "config.toml"
        self.pid_path = self.state_dir / "containerd.pid"
        self.cni_conf_dir = self.state_dir / "cni" / "net.d"
        self.ipam_dir = self.state_dir / "cni" / "ipam"
        self.snapshotter = ""
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self) -> str:
        """Adopt our containerd if it still answers, else write the config and start one."""
        self._validate()
        private_dir(self.state_dir)  # its state shows every pod; its log too
        private_file(self.log_path)
        pid = self._our_pid()
        if pid is not None:
            self.pid = pid
            if await self._answers():
                log.info("containerd: adopting pid %d on %s", pid, self.endpoint)
                return self.endpoint
            log.warning("containerd: pid %d runs our config but does not answer; restarting", pid)
            await self.stop()
        if self.socket_path.parent != self.state_dir:
            log.info(
                "containerd: %s is too long for a unix socket path; listening on %s instead",
                self.state_dir / "containerd.sock",
                self.socket_path,
            )
        self._write_config()
        self._spawn()
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop(grace=2.0)
            raise
        return self.endpoint

    def running(self) -> bool:
        """Whether the containerd this started or adopted still runs."""
        return self.pid is not None and self._is_ours(self.pid)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the containerd we started or adopted, SIGKILL after `grace` s (reset only).

        Pods keep running in their shims; remove the sandboxes first for a clean slate.
        """
        pid = self.pid or self._our_pid()
        if pid is not None and self._is_ours(pid):
            await self._terminate(pid, grace)
        if self._proc is not None:  # our child: reap it
            await asyncio.to_thread(self._proc.wait)
            self._proc = None
        self.pid = None
        self.pid_path.unlink(missing_ok=True)

    async def _terminate(self, pid: int, grace: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if await self._wait_gone(pid, grace):
            return
        log.warning("containerd: pid %d ignored SIGTERM for %.0fs, killing it", pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await self._wait_gone(pid, 5.0)

    # -- configuration ---------------------------------------------------------------------

    def _validate(self) -> None:
        if not BRIDGE_NAME.match(self.bridge):
            raise ConfigError(f"bridge name {self.bridge!r}: 1-15 of [A-Za-z0-9_.-]")
        try:
            net = ipaddress.ip_network(self.pod_cidr)
        except ValueError as exc:
            raise ConfigError(f"pod CIDR {self.pod_cidr!r}: {exc}") from exc
        if net.version != 4 or net.prefixlen > 30:  # a gateway and pods must fit
            raise ConfigError(f"pod CIDR {self.pod_cidr!r}: need an IPv4 subnet of /30 or wider")

    def _write_config(self) -> None:
        for d in (self.cni_conf_dir, self.ipam_dir):
            d.mkdir(parents=True, exist_ok=True)
        private_dir(self.socket_path.parent)
        self.snapshotter = self._choose_snapshotter()
        self.config_path.write_text(self._config_toml())
        conflist = cni_conflist(
            f"kubeedge-py-{self.bridge}", self.bridge, self.pod_cidr, self.ipam_dir
        )
        (self.cni_conf_dir / "10-kubeedge-py.conflist").write_text(json.dumps(conflist, indent=2))

    def _choose_snapshotter(self) -> str:
        if overlay_works(self.state_dir / "overlay-probe"):
            return "overlayfs"
        log.warning("containerd: overlay mounts fail here; using the native snapshotter (copies)")
        return "native"

    def _config_toml(self) -> str:
        s = self.state_dir
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        disabled = ", ".join(toml_str(p) for p in DISABLED_PLUGINS)
        return f"""# Written by kubeedge-py edgecore ({__name__}); rewritten at every start.
version = 2
root = {toml_str(s / "root")}
state = {toml_str(s / "state")}
disabled_plugins = [{disabled}]

[grpc]
  address = {toml_str(self.socket_path)}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {toml_str(s / "opt")}

{cri}]
  sandbox_image = {toml_str(self.sandbox_image)}
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  {cri}.containerd]
    snapshotter = {toml_str(self.snapshotter)}
    default_runtime_name = "runc"

  {cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

  {cri}.containerd.runtimes.runc.options]
    SystemdCgroup = false
    Root = {toml_str(s / "runc")}

  {cri}.cni]
    bin_dir = {toml_str(CNI_BIN_DIR)}
    conf_dir = {toml_str(self.cni_conf_dir)}
    max_conf_num = 1
"""

    # -- process ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.containerd_bin, "--config", str(self.config_path)]
        with os.fdopen(open_append(self.log_path), "ab") as out:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own session: it outlives edgecore, as runtimes do
                )
            except OSError as exc:
                raise ConfigError(f"cannot run {self.containerd_bin!r}: {exc}") from exc
        self.pid = self._proc.pid
        self.pid_path.write_text(f"{self.pid}\n")
        log.info(
            "containerd: started pid %d on %s (log %s)", self.pid, self.endpoint, self.log_path
        )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        async with CRI(timeout=1.0) as cri:
            await cri.connect(self.endpoint)
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise ContainerdError(
                        f"containerd exited with {self._proc.returncode}; see {self.log_path}"
                    )
                try:
                    await cri.version()
                    return
                except CRIPermanentError as exc:  # answers, but without the CRI plugin
                    raise ContainerdError(f"{exc}; see {self.log_path}") from exc
                except CRIError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise ContainerdError(
                        f"containerd's CRI did not answer on {self.endpoint} within "
                        f"{self.start_timeout:.0f}s; see {self.log_path}"
                    )
                await asyncio.sleep(0.1)

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """Alive and a containerd running our config (a recycled pid is someone else's)."""
        args = cmdline(pid)
        ours = bool(args) and "containerd" in Path(args[0]).name and str(self.config_path) in args
        return ours and pid_alive(pid)

    def _our_pid(self) -> int | None:
        """The recorded pid if it is still ours, else any process running our config."""
        recorded = self._recorded_pid()
        if recorded is not None and self._is_ours(recorded):
            return recorded
        pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        return next((pid for pid in pids if self._is_ours(pid)), None)

    async def _answers(self) -> bool:
        async with CRI(timeout=3.0) as cri:
            await cri.connect(self.endpoint)
            try:
                await cri.version()
            except CRIError as exc:
                log.warning("containerd: no CRI answer on %s (%s)", self.endpoint, exc)
                return False
        return True

    async def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


# -- image import ------------------------------------------------------------------------------


def archive_image(path: Path) -> tuple[str, str]:
    """(image name, config digest) of an image archive: an OCI layout (index.json) or what
    `docker save` writes (manifest.json), with or without a `./` before member names."""
    try:
        with tarfile.open(path) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            if "index.json" in members:
                return _oci_image(path, tar, members)
            if "manifest.json" in members:
                return _docker_image(path, tar, members)
    except (
        tarfile.TarError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,  # JSON of another shape than the format's
    ) as exc:
        raise ConfigError(f"{path}: not a readable image archive: {exc}") from exc
    raise ConfigError(f"{path}: neither an OCI archive (index.json) nor a docker save archive")


Members = dict[str, tarfile.TarInfo]


def _oci_image(path: Path, tar: tarfile.TarFile, members: Members) -> tuple[str, str]:
    index = json.loads(_member(tar, members, "index.json"))
    entry = index["manifests"][0]
    notes = entry.get("annotations", {})
    name = notes.get("io.containerd.image.name") or notes.get(
        "org.opencontainers.image.ref.name", ""
    )
    manifest = json.loads(_member(tar, members, _blob_path(entry["digest"])))
    if not name:
        raise ConfigError(f"{path}: index.json names no image (io.containerd.image.name)")
    return str(name), str(manifest["config"]["digest"])


def _docker_image(path: Path, tar: tarfile.TarFile, members: Members) -> tuple[str, str]:
    (entry, *_) = json.loads(_member(tar, members, "manifest.json"))
    tags = entry.get("RepoTags") or []
    if not tags:
        raise ConfigError(f"{path}: manifest.json names no image (RepoTags)")
    config = _member(tar, members, str(entry["Config"]).removeprefix("./"))
    return str(tags[0]), "sha256:" + hashlib.sha256(config).hexdigest()


def _blob_path(digest: str) -> str:
    algo, _, hexdigest = digest.partition(":")
    return f"blobs/{algo}/{hexdigest}"


def _member(tar: tarfile.TarFile, members: Members, name: str) -> bytes:
    f = tar.extractfile(members[name])
    if f is None:
        raise ConfigError(f"{tar.name!r}: {name} is not a file")
    return f.read()


async def cri_snapshotter(cri: CRI) -> str:
    """The snapshotter the CRI plugin unpacks into, from its verbose Status."""
    info = (await cri.status(verbose=True)).info
    config = json.loads(info.get("config", "{}"))
    return str(config.get("containerd", {}).get("snapshotter", "")) or "overlayfs"


async def import_images(
    endpoint_socket_path: str | Path,
    images_dir: str | Path,
    *,
    ctr_bin: str = "ctr",
    timeout: float = 120.0,
    on_skip: Callable[[Path, Exception], None] | None = None,
) -> list[str]:
    """Import every *.tar image archive (OCI layout or `docker save`) in `images_dir` into
    containerd's k8s.io namespace.

    An archive whose image the CRI already has (same config digest under the same name) is
    skipped; one that cannot be read or imported is skipped with an error in the log, and
    handed to `on_skip` with the error (edged makes it a Node Event). Returns the names of
    the images available, as the archives name them.
    """
    socket_path = str(endpoint_socket_path).removeprefix("unix://")
    archives = sorted(await asyncio.to_thread(Path(images_dir).glob, "*.tar"))
    names: list[str] = []
    async with CRI() as cri:
        await cri.connect(socket_path)
        snapshotter = await cri_snapshotter(cri)
        for archive in archives:
            try:
                name, image_id = await asyncio.to_thread(archive_image, archive)
                if await _image_id(cri, name) != image_id:
                    await _ctr_import(ctr_bin, socket_path, snapshotter, archive, timeout)
                    await _wait_image(cri, name, image_id)
            except (ConfigError, ContainerdError, CRIError, OSError) as exc:  # one odd file
                # never stops the node (a name the CRI refuses, ctr missing, ...)
                log.error("containerd: skipping image archive %s: %s", archive, exc)
                if on_skip is not None:
                    on_skip(archive, exc)
                continue
            names.append(name)
    return names


async def _image_id(cri: CRI, name: str) -> str:
    image = await cri.image_status(name)
    return image.id if image is not None else ""


async def _ctr_import(
    ctr_bin: str, socket_path: str, snapshotter: str, archive: Path, timeout: float
) -> None:
    argv = [ctr_bin, "--address", socket_path, "--namespace", K8S_NAMESPACE, "images", "import"]
    argv += ["--snapshotter", snapshotter, str(archive)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ContainerdError(f"ctr images import {archive}: no result in {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise ContainerdError(f"ctr images import {archive} failed: {out.decode(errors='replace')}")
    log.info("containerd: imported %s", archive)


async def _wait_image(cri: CRI, name: str, image_id: str, timeout: float = 10.0) -> None:
    """The CRI learns of imported images from containerd's events; wait until it has this one."""
    deadline = time.monotonic() + timeout
    while (found := await _image_id(cri, name)) != image_id:
        if time.monotonic() > deadline:
            raise ContainerdError(f"imported {name} but the CRI reports {found or 'nothing'}")
        await asyncio.sleep(0.05)
