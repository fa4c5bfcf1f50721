"""Paths from pod specs stay inside their volumes (checked as the kubelet checks them), and the
folders edged keeps pods' volumes and logs in are 0700."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.edged import paths, podspec, subpaths, volumes
from edge.private import private_dir

UID = "0a1b2c3d-uid"
OBJECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("configmap", "cm"): {"metadata": {"name": "cm"}, "data": {"a": "one", "b": "two"}},
    ("configmap", "tampered"): {"metadata": {"name": "tampered"}, "data": {"../x": "evil"}},
    ("secret", "s"): {"metadata": {"name": "s"}, "data": {"k": base64.b64encode(b"pw").decode()}},
}


def lookup(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, name))


def pod(volume_list: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> Any:
    container = {"name": "app", "image": "busybox", "volumeMounts": mounts or []}
    container["env"] = [{"name": "DIR", "value": "inner"}, {"name": "UP", "value": ".."}]
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": UID},
        "spec": {"volumes": volume_list, "containers": [container]},
    }


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A folder no pod may write to: every test checks it stays empty."""
    folder = tmp_path / "outside"
    folder.mkdir()
    yield folder
    assert files_under(folder) == []


def cm(items: list[dict[str, str]], name: str = "cm") -> dict[str, Any]:
    return {"name": "v", "configMap": {"name": name, "items": items}}


ESCAPING_VOLUMES = [
    pytest.param(cm([{"key": "a", "path": "../x"}]), "must not contain '..'", id="item-dotdot"),
    pytest.param(
        cm([{"key": "a", "path": "ok"}, {"key": "b", "path": "d/../../../x"}]),
        "must not contain '..'",
        id="nested-dotdot-after-a-good-item",
    ),
    pytest.param(cm([{"key": "a", "path": "{outside}/x"}]), "relative path", id="item-absolute"),
    pytest.param(cm([{"key": "a", "path": "..data"}]), "start with '..'", id="item-reserved"),
    pytest.param(cm([], name="tampered"), "must not contain '..'", id="key-dotdot"),
    pytest.param(
        {"name": "v", "secret": {"secretName": "s", "items": [{"key": "k", "path": "../k"}]}},
        "must not contain '..'",
        id="secret-item",
    ),
    pytest.param(
        {
            "name": "v",
            "projected": {
                "sources": [{"configMap": {"name": "cm", "items": [{"key": "a", "path": "/x"}]}}]
            },
        },
        "relative path",
        id="projected-item",
    ),
    pytest.param(
        {"name": "v", "hostPath": {"path": "rel/dir"}}, "absolute", id="hostpath-relative"
    ),
    pytest.param(
        {"name": "v", "hostPath": {"path": "{outside}/../x"}}, "'..'", id="hostpath-dotdot"
    ),
    pytest.param({"name": "../v", "emptyDir": {}}, "DNS label", id="volume-name"),
]


@pytest.mark.parametrize(("volume", "message"), ESCAPING_VOLUMES)
def test_volume_paths_that_escape_are_refused_before_anything_is_written(
    tmp_path: Path, outside: Path, volume: dict[str, Any], message: str
) -> None:
    """An item path, key, hostPath or volume name that could leave the volume refuses the
    whole pod, naming the volume and the path; no file is written anywhere."""
    root = tmp_path / "data"
    volume = eval_outside(volume, outside)
    with pytest.raises(volumes.UnsafeVolume, match=message) as refused:
        volumes.prepare(root, pod([volume]), lookup)
    assert str(refused.value).startswith("volume '")
    assert files_under(tmp_path) == []
    assert not (tmp_path / "x").exists() and not (root / "rel").exists()


def eval_outside(value: Any, outside: Path) -> Any:
    """The table's '{outside}' placeholders, filled in."""
    if isinstance(value, dict):
        return {k: eval_outside(v, outside) for k, v in value.items()}
    if isinstance(value, list):
        return [eval_outside(v, outside) for v in value]
    return value.replace("{outside}", str(outside)) if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("volume", "files"),
    [
        pytest.param(cm([]), ["a", "b"], id="keys"),
        pytest.param(cm([{"key": "a", "path": "d/e/a"}]), ["d/e/a"], id="nested-item"),
        pytest.param(cm([{"key": "a", "path": "a..b"}]), ["a..b"], id="dots-inside-a-name"),
        pytest.param({"name": "v", "secret": {"secretName": "s"}}, ["k"], id="secret"),
    ],
)
def test_volume_files_that_stay_inside_are_written(
    tmp_path: Path, outside: Path, volume: dict[str, Any], files: list[str]
) -> None:
    """Good names are written under the volume's own folder, as before."""
    found = volumes.prepare(tmp_path / "data", pod([volume]), lookup)
    assert files_under(Path(found["v"])) == files


def test_files_are_not_written_through_links_planted_in_a_volume(
    tmp_path: Path, outside: Path
) -> None:
    """A link found inside a configMap volume (a folder or a file swapped for a symlink out)
    is never written through: a linked folder refuses the pod, a linked file is replaced."""
    volume = cm([{"key": "a", "path": "sub/a"}, {"key": "b", "path": "b"}])
    target = Path(volumes.prepare(tmp_path / "data", pod([volume]), lookup)["v"])
    (target / "b").unlink()
    (target / "b").symlink_to(outside / "b")
    OBJECTS[("configmap", "cm")]["data"]["b"] = "changed"
    try:
        volumes.prepare(tmp_path / "data", pod([volume]), lookup)
        assert not (target / "b").is_symlink() and (target / "b").read_text() == "changed"
        (target / "sub" / "a").unlink()
        (target / "sub").rmdir()
        (target / "sub").symlink_to(outside)
        with pytest.raises(volumes.UnsafeVolume, match="'sub' is not a folder"):
            volumes.prepare(tmp_path / "data", pod([volume]), lookup)
    finally:
        OBJECTS[("configmap", "cm")]["data"]["b"] = "two"


@pytest.fixture
def host(tmp_path: Path, outside: Path) -> Path:
    """A hostPath volume holding a folder, a link inside it, and links that lead out."""
    folder = tmp_path / "host"
    (folder / "inner").mkdir(parents=True)
    (folder / "file").write_text("f")
    (folder / "inside-link").symlink_to(folder / "inner")
    (folder / "escape").symlink_to(outside)
    (folder / "relative-escape").symlink_to("../outside")
    (folder / "dangling").symlink_to(outside / "new")
    return folder


def container_config(tmp_path: Path, spec: Any, **changes: Any) -> Any:
    """The CRI config edged makes for the pod's container (with `changes` to its spec)."""
    paths = volumes.prepare(tmp_path / "data", spec, lookup)
    container = {**spec["spec"]["containers"][0], **changes}
    subpath_dir = volumes.pod_dir(tmp_path / "data", spec["metadata"]["uid"]) / "volume-subpaths"
    return podspec.container_config(
        spec,
        container,
        lookup=lookup,
        volume_paths=paths,
        subpath_dir=subpath_dir,
        restart_count=0,
        pod_ip="",
        node_name="",
    )


@pytest.fixture(autouse=True)
def unmount_subpaths(tmp_path: Path) -> Iterator[None]:
    """subPath bind mounts are real mounts: gone before pytest removes tmp_path."""
    yield
    for pod_dir in (tmp_path / "data" / "pods").glob("*"):
        subpaths.release(pod_dir)


def mount_source(tmp_path: Path, host: Path, mount: dict[str, Any]) -> str:
    """The host path edged hands containerd for one volumeMount of a hostPath volume."""
    volume = {"name": "v", "hostPath": {"path": str(host)}}
    spec = pod([volume], [{"name": "v", "mountPath": "/mnt", **mount}])
    return str(container_config(tmp_path, spec).mounts[0].host_path)


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        pytest.param({"subPath": "/etc"}, "must be a relative path", id="absolute"),
        pytest.param({"subPath": "../x"}, "must not contain '..'", id="dotdot"),
        pytest.param({"subPath": "inner/../../x"}, "must not contain '..'", id="inner-dotdot"),
        pytest.param({"subPath": "escape"}, "outside", id="symlink-out"),
        pytest.param({"subPath": "escape/new"}, "outside", id="through-symlink-out"),
        pytest.param({"subPath": "relative-escape/x"}, "outside", id="relative-symlink-out"),
        pytest.param({"subPath": "dangling"}, "outside", id="dangling-symlink-out"),
        pytest.param({"subPathExpr": "$(UP)/x"}, "must not contain '..'", id="expr-dotdot"),
        pytest.param({"subPathExpr": "$(NOPE)"}, "missing value for NOPE", id="expr-missing"),
    ],
)
def test_subpaths_that_leave_the_volume_are_refused(
    tmp_path: Path, host: Path, mount: dict[str, Any], message: str
) -> None:
    """An absolute or `..` subPath, or one that a symlink leads out of the volume (even of a
    hostPath volume), fails the container's config with a message naming mount and container;
    nothing is created outside (the `outside` fixture checks)."""
    with pytest.raises(podspec.SpecError, match=message) as refused:
        mount_source(tmp_path, host, mount)
    assert "volumeMount 'v' of container 'app'" in str(refused.value)


@pytest.mark.parametrize(
    ("mount", "want"),
    [
        pytest.param({}, ".", id="whole-volume"),
        pytest.param({"subPath": "inner"}, "inner", id="folder"),
        pytest.param({"subPath": "file"}, "file", id="file"),
        pytest.param({"subPath": "inside-link"}, "inner", id="symlink-inside"),
        pytest.param({"subPath": "new/deeper"}, "new/deeper", id="created"),
        pytest.param({"subPathExpr": "$(DIR)"}, "inner", id="expr"),
        pytest.param({"subPathExpr": "a$$b"}, "a$b", id="expr-escaped-dollar"),
    ],
)
def test_subpaths_inside_the_volume_resolve_to_their_real_path(
    tmp_path: Path, host: Path, mount: dict[str, Any], want: str
) -> None:
    """A subPath inside the volume (links inside resolved; created as a folder when missing, as
    the kubelet does) is handed to the runtime as a bind mount of exactly that folder or file."""
    source = Path(mount_source(tmp_path, host, mount))
    real = (host / want).resolve()
    assert real.exists()
    if not mount:
        assert source == real  # the whole volume: no bind mount needed
        return
    assert subpaths.is_mounted(source) and "volume-subpaths" in source.parts
    assert (os.stat(source).st_dev, os.stat(source).st_ino) == (
        os.stat(real).st_dev,
        os.stat(real).st_ino,
    )


def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path: Path, host: Path) -> None:
    """The bind mount holds the inode that was checked: replacing the subPath folder with a
    link out of the volume afterwards changes nothing the container sees, and a later start
    of the container (a new check) is refused."""
    source = Path(mount_source(tmp_path, host, {"subPath": "swap"}))
    (source / "before").write_text("x")
    (host / "swap").rename(host / "swapped")
    (host / "swap").symlink_to(host.parent / "outside")
    (source / "after").write_text("y")  # what the container writes lands in the old folder
    assert sorted(p.name for p in (host / "swapped").iterdir()) == ["after", "before"]
    with pytest.raises(podspec.SpecError, match="outside"):
        mount_source(tmp_path, host, {"subPath": "swap"})


def test_an_element_turned_into_a_link_while_opening_is_refused(tmp_path: Path) -> None:
    """The open after the check follows no link: a link where the check saw a folder (the
    race, played slowly) is refused, not mounted."""
    volume = tmp_path / "vol"
    (volume / "a").mkdir(parents=True)
    (volume / "inside").mkdir()
    (volume / "a" / "b").symlink_to(volume / "inside")  # a link inside: resolves fine
    with pytest.raises(paths.UnsafePath, match="symlink"):
        subpaths._open_beneath(volume, "a/b")  # opened as it was written: the link shows


def test_a_subpath_removed_while_being_mounted_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a container sharing the volume removed the subPath folder between edged's
    open and its bind mount; the error named only the mount target ('No such file or
    directory: .../volume-subpaths/...'). It now says the subPath went away, and nothing is
    mounted."""
    volume = tmp_path / "vol"
    (volume / "gone").mkdir(parents=True)
    opened = subpaths._open_beneath

    def open_then_remove(root: Path, rel: str) -> int:
        fd = opened(root, rel)
        (volume / "gone").rmdir()  # the neighbour's `rm -rf`, in the instant between
        return fd

    monkeypatch.setattr(subpaths, "_open_beneath", open_then_remove)
    target = tmp_path / "pod" / "volume-subpaths" / "vol" / "c" / "0"
    with pytest.raises(OSError, match="'gone' was removed while it was being mounted"):
        subpaths.pin(volume, "gone", target)
    assert not subpaths.is_mounted(target)


def test_configmap_and_secret_volumes_are_mounted_read_only(tmp_path: Path) -> None:
    """Containers read configMap/secret volumes but cannot write them (as with the kubelet),
    so they cannot plant a link edged would write through; other volumes keep readOnly."""
    spec = pod(
        [cm([]), {"name": "scratch", "emptyDir": {}}],
        [{"name": "v", "mountPath": "/c"}, {"name": "scratch", "mountPath": "/s"}],
    )
    config = container_config(tmp_path, spec)
    assert [(m.container_path, m.readonly) for m in config.mounts] == [("/c", True), ("/s", False)]


def test_a_container_name_that_is_not_a_label_is_refused(tmp_path: Path) -> None:
    """The container name is joined into the log path containerd writes: `../x` is refused."""
    with pytest.raises(podspec.SpecError, match="DNS label"):
        container_config(tmp_path, pod([]), name="../../x")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_pod_folders_are_private_and_volume_folders_usable(tmp_path: Path) -> None:
    """DATA_DIR/pods, the pod's folder and its volumes folder are 0700 (Secrets inside), the
    volume folder itself keeps the usual mode for the container's users; folders left loose
    by an older edgecore are tightened at start."""
    root = private_dir(tmp_path / "data")
    os.umask(old := os.umask(0o022))
    found = volumes.prepare(root, pod([{"name": "v", "secret": {"secretName": "s"}}]), lookup)
    pod_folder = root / "pods" / UID
    assert [mode(p) for p in (root, root / "pods", pod_folder, pod_folder / "volumes")] == [
        0o700
    ] * 4
    assert mode(Path(found["v"])) == 0o777 & ~old
    for loose in (root / "pods", pod_folder, pod_folder / "volumes"):
        loose.chmod(0o755)
    (pod_folder / "logs").mkdir(mode=0o755)
    volumes.private_pod_dirs(root)
    assert {mode(p) for p in (root / "pods", pod_folder, *pod_folder.iterdir())} == {0o700}


# -- spec fields edged applies, and those it refuses rather than ignores (issue 10) -------------


def test_security_context_reaches_the_runtime(tmp_path: Path) -> None:
    """runAsUser/runAsGroup (container over pod), privileged, readOnlyRootFilesystem,
    capabilities, allowPrivilegeEscalation and supplemental groups go to the CRI (they were
    silently dropped: a pod asking for uid 1000 ran as root)."""
    spec = pod([])
    spec["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}
    container = {
        "securityContext": {
            "runAsUser": 1001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        }
    }
    sc = container_config(tmp_path, spec, **container).linux.security_context
    assert (sc.run_as_user.value, sc.run_as_group.value) == (1001, 3000)
    assert sc.readonly_rootfs and sc.no_new_privs and not sc.privileged
    assert list(sc.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(sc.capabilities.drop_capabilities) == ["ALL"]
    assert list(sc.supplemental_groups) == [2000]


def test_run_as_non_root_without_a_user_is_refused(tmp_path: Path) -> None:
    spec = pod([])
    spec["spec"]["securityContext"] = {"runAsNonRoot": True}
    with pytest.raises(podspec.SpecError, match="runAsNonRoot"):
        container_config(tmp_path, spec)


def test_what_edged_does_not_do_is_named_not_ignored() -> None:
    spec = pod([{"name": "m", "emptyDir": {"medium": "HugePages"}}])
    spec["spec"]["initContainers"] = [
        {"name": "init", "image": "busybox"},
        {"name": "sidecar", "image": "busybox", "restartPolicy": "Always"},
    ]
    spec["spec"]["containers"][0]["readinessProbe"] = {"grpc": {"port": 9000}}
    spec["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"port": 1, "scheme": "HTTPS"}}
    missing = podspec.unsupported(spec)
    assert missing == [
        "restartPolicy of init container sidecar (sidecar containers)",
        "emptyDir.medium HugePages of volume m",
    ]
    assert podspec.unsupported(pod([])) == []


def test_the_host_ip_field_ref_is_the_nodes_address(tmp_path: Path) -> None:
    spec = pod([])
    env_ref = [{"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]
    pairs = podspec.env(
        spec, {**spec["spec"]["containers"][0], "env": env_ref}, lookup,
        pod_ip="10.0.0.2", node_name="edge-1", host_ip="192.0.2.7",
    )  # fmt: skip
    assert pairs == [("HOST", "192.0.2.7")]


def test_default_mode_and_item_modes_apply_to_the_files(tmp_path: Path) -> None:
    """defaultMode and items[].mode were ignored (every file 0644): a private key the pod
    asked to be 0400 was readable by the container's other users."""
    volume: dict[str, Any] = {
        "name": "v",
        "secret": {
            "secretName": "creds",
            "defaultMode": 0o400,
            "items": [{"key": "a", "path": "a"}, {"key": "b", "path": "b", "mode": 0o640}],
        },
    }
    creds = {"metadata": {"name": "creds"}, "data": {"a": "YQ==", "b": "Yg=="}}
    found = volumes.prepare(tmp_path / "data", pod([volume]), lambda kind, ns, name: creds)
    folder = Path(found["v"])
    assert {p.name: mode(p) for p in folder.iterdir()} == {"a": 0o400, "b": 0o640}
    volume["secret"]["defaultMode"] = 0o440  # a changed mode is applied to the same content
    volumes.prepare(tmp_path / "data", pod([volume]), lambda kind, ns, name: creds)
    assert mode(folder / "a") == 0o440
