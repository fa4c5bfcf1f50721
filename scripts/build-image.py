#!/usr/bin/env python3
"""Build tiny OCI image archives from Debian's busybox-static, with the standard library only.

What it does: writes `busybox.tar` (docker.io/kubeedge-py/busybox:latest, Cmd ["sh"]) and
`pause.tar` (docker.io/kubeedge-py/pause:latest, a shell that blocks until SIGTERM/SIGINT) into
`--out`. Each is an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...) whose
index entry carries `io.containerd.image.name` (the full name) and
`org.opencontainers.image.ref.name` (the tag), so `ctr images import` names it without help.
The one layer holds /bin/busybox, a symlink per applet `busybox --list` reports, /tmp, /www and
a minimal /etc.

What it does not: push, pull, or need docker/buildah/skopeo; no registry is reachable here.

Why: edge nodes (and the tests) run real pods on containerd without any registry, and a pod
needs both an application image and a sandbox ("pause") image. Every mtime, owner and order is
fixed and gzip carries no timestamp, so rebuilding gives the same digests; a file whose bytes
did not change is not rewritten.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

EPOCH = 0  # every mtime in every tar, so digests do not depend on when or where we build
CREATED = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAUSE_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done'
# Used when `busybox --list` cannot run (e.g. building for another architecture).
FALLBACK_APPLETS = frozenset(
    {"cat", "date", "echo", "env", "false", "httpd", "ls", "mkdir", "nc", "sh", "sleep", "tail"}
    | {"true", "wget"}
)
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
}
GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
}
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class ImageSpec:
    """One image to write: its archive file name, full reference and default command."""

    file: str
    name: str  # full reference, e.g. docker.io/kubeedge-py/busybox:latest
    cmd: tuple[str, ...]
    arch: str = "amd64"  # GOARCH naming, as OCI platforms use it

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


IMAGES = (
    ImageSpec("busybox.tar", "docker.io/kubeedge-py/busybox:latest", ("sh",)),
    ImageSpec("pause.tar", "docker.io/kubeedge-py/pause:latest", ("sh", "-c", PAUSE_SCRIPT)),
)


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob of an OCI layout."""

    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": self.digest, "size": len(self.data)}


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def list_applets(busybox: Path) -> list[str]:
    """The applets this busybox binary provides (its own list, else a fixed minimum)."""
    try:
        out = subprocess.run(
            [str(busybox), "--list"], check=True, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return sorted(FALLBACK_APPLETS)
    names = {n for n in out.split() if n and "/" not in n and n != "busybox"}
    return sorted(names | set(FALLBACK_APPLETS))


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "root", "root"
    return info


def rootfs_tar(busybox: Path, applets: list[str]) -> bytes:
    """The uncompressed rootfs layer: busybox, one symlink per applet, /tmp, /www, /etc."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("www", 0o755)):
            tar.addfile(_info(d, tarfile.DIRTYPE, mode))
        binary = busybox.read_bytes()
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for applet in applets:
            tar.addfile(_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        for path, text in sorted(ETC_FILES.items()):
            data = text.encode()
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=EPOCH, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def image_config(spec: ImageSpec, diff_id: str) -> Blob:
    config = {
        "architecture": spec.arch,
        "os": "linux",
        "created": CREATED,
        "config": {"Env": [PATH_ENV], "Cmd": list(spec.cmd), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "kubeedge-py scripts/build-image.py"}],
    }
    return Blob(canonical_json(config))


def layout_blobs(spec: ImageSpec, layer_tar: bytes, layer: Blob) -> tuple[Blob, Blob, list[Blob]]:
    """The index.json blob, the manifest blob, and every blob the layout holds for one image."""
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = image_config(spec, diff_id)
    manifest = Blob(
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config.descriptor(MEDIA_CONFIG),
                "layers": [layer.descriptor(MEDIA_LAYER)],
            }
        )
    )
    entry = manifest.descriptor(MEDIA_MANIFEST)
    entry["annotations"] = {
        "io.containerd.image.name": spec.name,
        "org.opencontainers.image.ref.name": spec.tag,
    }
    entry["platform"] = {"architecture": spec.arch, "os": "linux"}
    index = Blob(
        canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]})
    )
    return index, manifest, [config, manifest, layer]


def archive_bytes(index: Blob, blobs: list[Blob]) -> bytes:
    """An OCI image layout as a tar, members in a fixed order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_info(d, tarfile.DIRTYPE, 0o755))
        for blob in sorted(blobs, key=lambda b: b.digest):
            name = "blobs/sha256/" + blob.digest.removeprefix("sha256:")
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(blob.data)), io.BytesIO(blob.data))
        layout = canonical_json({"imageLayoutVersion": "1.0.0"})
        for name, data in (("oci-layout", layout), ("index.json", index.data)):
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds these bytes; True when written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
        tmp = Path(f.name)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return True


def host_arch() -> str:
    """This machine's architecture as OCI names it (the busybox binary is the host's)."""
    machine = platform.machine()
    return GOARCH.get(machine, machine)


def build(out: Path, busybox: Path, arch: str = "amd64") -> dict[str, str]:
    """Write every image archive into `out`; returns {image name: manifest digest}."""
    out.mkdir(parents=True, exist_ok=True)
    layer_tar = rootfs_tar(busybox, list_applets(busybox))
    layer = Blob(gzip_bytes(layer_tar))
    built: dict[str, str] = {}
    for spec in IMAGES:
        index, manifest, blobs = layout_blobs(replace(spec, arch=arch), layer_tar, layer)
        changed = write_if_changed(out / spec.file, archive_bytes(index, blobs))
        built[spec.name] = manifest.digest
        state = "written" if changed else "unchanged"
        print(f"{out / spec.file}: {spec.name} {manifest.digest} ({state})")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build busybox.tar and pause.tar (OCI image archives) from busybox-static."
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the archives")
    parser.add_argument(
        "--busybox",
        type=Path,
        default=Path("/usr/bin/busybox"),
        help="a statically linked busybox binary (default: %(default)s, Debian busybox-static)",
    )
    parser.add_argument(
        "--arch",
        default=host_arch(),
        help="OCI architecture of the busybox binary (default: this machine's, %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.busybox.is_file():
        parser.error(f"{args.busybox}: no such file (apt-get install busybox-static)")
    build(args.out, args.busybox, args.arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
