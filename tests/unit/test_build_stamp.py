"""scripts/build-k8s.sh decides to rebuild only when the pins or flags change, or a binary is
missing. Checked without compiling: a copy of the script and the pins runs against the built
binaries with Go off PATH, so "would rebuild" shows as its "Go is needed" refusal."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / ".k8s" / "bin"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kine")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A repo with only the build script and the pins, and a bin dir of the built binaries."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "build-k8s.sh", repo / "scripts")
    for module in ("kubernetes", "kine"):
        (repo / "third_party" / module).mkdir(parents=True)
        for name in ("go.mod", "go.sum"):
            shutil.copy(ROOT / "third_party" / module / name, repo / "third_party" / module)
    out = repo / "bin"
    out.mkdir()
    for name in BINARIES:
        (out / name).symlink_to(BUILT / name)
    shutil.copy(BUILT / ".stamp", out / ".stamp")
    return repo


def build(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "scripts" / "build-k8s.sh")],
        env={"PATH": "/usr/bin:/bin", "K8S_BIN_DIR": str(repo / "bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_second_build_does_nothing(copy: Path) -> None:
    stamp = (copy / "bin" / ".stamp").read_text()
    done = build(copy)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (copy / "bin" / ".stamp").read_text() == stamp


def test_a_version_change_rebuilds(copy: Path) -> None:
    go_mod = copy / "third_party" / "kine" / "go.mod"
    go_mod.write_text(go_mod.read_text().replace("v0.", "v9.", 1))
    done = build(copy)
    assert done.returncode == 1
    assert "Go is needed to build the control plane" in done.stderr


def test_a_missing_binary_is_rebuilt(copy: Path) -> None:
    (copy / "bin" / "kube-scheduler").unlink()
    done = build(copy)
    assert done.returncode == 1
    assert "Go is needed to build the control plane" in done.stderr
