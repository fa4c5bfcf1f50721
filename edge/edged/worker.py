"""One pod's life on this node: sandbox, containers, restarts, probes, status, termination.

A PodWorker is a task per pod UID. Each round (every pod_sync_interval, or at once when the pod
or an object it uses changes) it makes containerd match the pod spec: a ready sandbox; the init
containers run one at a time, in order, each to completion (a failed one restarted with the
crash back-off, or the pod Failed under restartPolicy Never); then each container created and
started, crashed containers restarted per restartPolicy with the kubelet's doubling back-off,
liveness/startup failures killing the container, changed container specs replacing the
container. It then builds the pod status from what the CRI reports and hands it to `report`
when it changed. A pod with a deletionTimestamp (or deleted) is stopped gracefully, its
sandbox removed, and `gone` is called. What it does, and every failure, is also a Kubernetes
Event about the pod or its container, in the kubelet's words (events.py).

On an edgecore restart the worker finds the sandbox and containers it made before by their
labels (io.kubernetes.pod.uid, io.kubernetes.container.name) and adopts them: nothing running is
recreated, and an init container that completed in the sandbox is not run again. A new sandbox
runs the init containers again, as the kubelet's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cri.runtime.v1 import api_pb2 as cri

from common import certs
from edge.edged import logs, podspec, probes, volumes
from edge.edged.cri import CRI, CRIError, CRINotFound
from edge.edged.events import EventRecorder
from edge.edged.node import rfc3339
from edge.private import FILE_MODE, private_tree

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]  # (pod, status)
Gone = Callable[[dict[str, Any]], Awaitable[None]]
CONFIG_ERROR = "CreateContainerConfigError"  # the kubelet's waiting reason for a bad config
SANDBOX_ERROR = "CreatePodSandboxError"  # the kubelet's name for a sandbox that will not start


@dataclass
class Timing:
    sync_interval: float = 1.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    log_max_bytes: int = 10 * 1024 * 1024  # rotate a running container's log past this
    log_max_files: int = 5


def adopted_status(status: dict[str, Any], name: str, container_id: str) -> dict[str, Any]:
    """What the API's pod status says of container `name` if it describes `container_id`."""
    for c in status.get("containerStatuses") or []:
        if c.get("name") == name and c.get("containerID") == f"containerd://{container_id}":
            return dict(c)
    return {}


def all_statuses(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Container and init container statuses of a pod status (names are unique across both)."""
    return (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])


def api_restart_count(status: dict[str, Any], name: str) -> int:
    """The attempt number of container `name`'s last container as the API's pod status tells
    it (after an edgecore restart), or -1 when it never started; init containers too."""
    for c in all_statuses(status):
        if c.get("name") == name and c.get("containerID"):
            return int(c.get("restartCount") or 0)
    return -1


def next_backoff(current: float, failed_at: float, now: float, timing: Timing) -> float:
    """The delay before restarting a container that just failed: backoff_initial the first
    time, doubled on each failure up to backoff_max — and back to backoff_initial when the
    last failure is more than twice backoff_max ago (a long healthy run), as the kubelet's
    back-off forgets old failures."""
    if current == 0.0 or now - failed_at > 2 * timing.backoff_max:
        return timing.backoff_initial
    return min(current * 2, timing.backoff_max)


@dataclass
class _Container:
    """What the worker remembers of one container name between rounds."""

    backoff: float = 0.0
    failed_at: float = 0.0  # monotonic time of the last failure that set `backoff`
    pull_backoff: float = 0.0  # the same for image pulls (ImagePullBackOff)
    pull_failed_at: float = 0.0
    pull_retry_at: float = 0.0
    last_attempt: int = -1  # the attempt number of the last container started (-1: none yet)
    next_start: float = 0.0
    waiting_reason: str = ""
    waiting_message: str = ""
    liveness: probes.Prober | None = None
    readiness: probes.Prober | None = None
    startup: probes.Prober | None = None
    probed_id: str = ""


@dataclass
class PodWorker:
    pod: dict[str, Any]
    runtime: CRI
    root: Path
    node_name: str
    lookup: volumes.Lookup
    report: Report
    gone: Gone
    timing: Timing = field(default_factory=Timing)
    host_ip: str = ""
    events: EventRecorder | None = None  # Kubernetes Events about the pod (None: none)
    sandbox_id: str = ""
    pod_ip: str = ""
    started_at: str = ""
    deleted: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _containers: dict[str, _Container] = field(default_factory=dict)
    _last_status: dict[str, Any] = field(default_factory=dict)
    _last_unexpected: str = ""
    _saved_status: dict[str, Any] | None = None  # status.json, once read

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"].get("namespace", "default"))

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def container_running(self, name: str) -> bool:
        """Whether container `name` (or init container) may be running: the last status says
        so, or says nothing of it yet (just started, or edgecore just restarted)."""
        states = [
            c.get("state") or {} for c in all_statuses(self._last_status) if c.get("name") == name
        ]
        return not states or "running" in states[0]

    def update(self, pod: dict[str, Any] | None) -> None:
        """A new version of the pod (None: the pod was deleted from the API)."""
        if pod is None:
            self.deleted = True
        else:
            self.pod = pod
        self._wake.set()

    def poke(self) -> None:
        """Something the pod uses (a configmap, a secret) changed."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if self.deleted or self.pod["metadata"].get("deletionTimestamp"):
                await self._terminate_retrying()
                return
            try:
                await self._sync()
                self._last_unexpected = ""
            except (CRIError, podspec.SpecError, volumes.VolumeError) as exc:
                self._waiting_for_volumes(exc)
                log.warning("edged: pod %s: %s", self.key, exc)
            except Exception as exc:  # one pod's surprise must not end its worker
                self._unexpected(exc)
            try:
                await self._report_status()
            except Exception as exc:  # a status edged cannot build: said once, not per round
                self._unexpected(exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.timing.sync_interval)

    async def _sync(self) -> None:
        missing = podspec.unsupported(self.pod)
        if missing:  # refused with a reason rather than run without what it asked for
            message = "not supported by edged yet: " + ", ".join(missing)
            self._containers_waiting(CONFIG_ERROR, message)
            self._event("Failed", f"Error: {message}", warning=True)
            raise podspec.SpecError(message)
        try:
            await self._ensure_sandbox()
        except CRIError as exc:  # in the pod's status and Events, not only in edgecore's log
            self._containers_waiting(SANDBOX_ERROR, f"failed to create pod sandbox: {exc}")
            self._event(
                "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}", warning=True
            )
            raise
        for memo in self._containers.values():
            if memo.waiting_reason == SANDBOX_ERROR:
                memo.waiting_reason = memo.waiting_message = ""
        try:
            paths = volumes.prepare(self.root, self.pod, self.lookup)
        except volumes.UnsafeVolume as exc:
            self._refuse_containers(str(exc))
            raise
        current = await self._current_containers()
        if not await self._initialize(current, paths):
            return  # the containers wait (PodInitializing) until every init container completed
        errors: list[Exception] = []
        for container in self.pod.get("spec", {}).get("containers") or []:
            try:  # one container's trouble does not stop its neighbours' starts and probes
                await self._sync_container(container, current.get(container["name"]), paths)
            except (CRIError, podspec.SpecError) as exc:
                errors.append(exc)
        if errors:
            raise (
                errors[0]
                if len(errors) == 1
                else podspec.SpecError("; ".join(str(e) for e in errors))
            )

    async def _initialize(
        self, current: dict[str, list[cri.Container]], paths: dict[str, str]
    ) -> bool:
        """Run the init containers one at a time, in order, each to completion; True once all
        exited 0 — or once a container of this sandbox exists (initialized before; completed
        init containers are not run again, also not after an edgecore restart)."""
        spec = self.pod.get("spec", {})
        if any(c["name"] in current for c in spec.get("containers") or []):
            return True
        for container in spec.get("initContainers") or []:
            found = current.get(container["name"]) or []
            if not await self._sync_init_container(container, found, paths):
                return False
        return True

    async def _sync_init_container(
        self, spec: dict[str, Any], existing: list[cri.Container], paths: dict[str, str]
    ) -> bool:
        """One round of init container `spec`: True when it has completed (exited 0); else it
        is started, left running, or restarted after a failure as a container is (crash
        back-off; never under restartPolicy Never, where the pod fails)."""
        if existing and existing[0].state == cri.CONTAINER_EXITED:
            status = await self.runtime.container_status(existing[0].id)
            if status.exit_code == 0:
                self._containers.setdefault(spec["name"], _Container()).waiting_reason = ""
                return True
        await self._sync_container(spec, existing, paths)
        return False

    def _refuse_containers(self, message: str) -> None:
        """A volume of the pod asks for more than its folder: no container of it starts, and
        each says why, as the kubelet words a bad container config."""
        self._containers_waiting(CONFIG_ERROR, message)
        self._event("Failed", f"Error: {message}", warning=True)

    def _waiting_for_volumes(self, exc: Exception) -> None:
        """A volume that cannot be prepared: containers stay ContainerCreating, saying why."""
        if isinstance(exc, volumes.VolumeError) and not isinstance(exc, volumes.UnsafeVolume):
            self._containers_waiting("ContainerCreating", f"failed to prepare volumes: {exc}")
            self._event("FailedMount", f"MountVolume.SetUp failed: {exc}", warning=True)

    def _unexpected(self, exc: Exception) -> None:
        """An error nothing expected: logged with its traceback once (not every round), and
        the pod's containers say it, so it shows in kubectl rather than only in the log."""
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_unexpected:
            self._last_unexpected = message
            log.error("edged: pod %s: unexpected error", self.key, exc_info=exc)
        self._containers_waiting("RunContainerError", f"edged: {message}")
        self._event("Failed", f"Error: edged: {message}", warning=True)

    def _event(
        self, reason: str, message: str, container: str = "", *, warning: bool = False
    ) -> None:
        """A Kubernetes Event about this pod, or its container `container`."""
        if self.events is not None:
            self.events.pod(self.pod, reason, message, container=container, warning=warning)

    def _containers_waiting(self, reason: str, message: str) -> None:
        """Every container not yet created waits for `reason` (shown in the pod's status), init
        containers too: kubectl shows the reason rather than a bare Init:0/N."""
        spec = self.pod.get("spec", {})
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            memo = self._containers.setdefault(container["name"], _Container())
            memo.waiting_reason, memo.waiting_message = reason, message

    async def _ensure_sandbox(self) -> None:
        if self.sandbox_id:
            status = await self.runtime.pod_sandbox_status(self.sandbox_id)
            if status.state == cri.SANDBOX_READY:
                return
            log.info(
                "edged: pod %s: sandbox %s not ready; recreating", self.key, self.sandbox_id[:12]
            )
            self._event("SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
            await self._remove_sandbox()
        existing = await self.runtime.list_pod_sandbox(
            cri.PodSandboxFilter(label_selector={podspec.POD_UID: self.uid})
        )
        ready = [s for s in existing if s.state == cri.SANDBOX_READY]
        if ready:
            self.sandbox_id = ready[0].id
            log.info("edged: pod %s: adopted sandbox %s", self.key, self.sandbox_id[:12])
        else:
            for stale in existing:
                await self.runtime.remove_pod_sandbox(stale.id)
            config = self._sandbox_config(attempt=len(existing))
            self.sandbox_id = await self.runtime.run_pod_sandbox(config)
            log.info("edged: pod %s: started sandbox %s", self.key, self.sandbox_id[:12])
        status = await self.runtime.pod_sandbox_status(self.sandbox_id)
        host_network = self.pod.get("spec", {}).get("hostNetwork")
        self.pod_ip = self.host_ip if host_network else status.network.ip
        created = datetime.fromtimestamp(status.created_at / 1e9, UTC)
        self.started_at = self.started_at or rfc3339(created)

    def _sandbox_config(self, attempt: int = 0) -> cri.PodSandboxConfig:
        log_dir = private_tree(self.root, "pods", self.uid, "logs")
        return podspec.sandbox_config(self.pod, log_dir, attempt)

    async def _current_containers(self) -> dict[str, list[cri.Container]]:
        """This pod's containers by name, newest attempt first."""
        found = await self.runtime.list_containers(
            cri.ContainerFilter(
                pod_sandbox_id=self.sandbox_id, label_selector={podspec.POD_UID: self.uid}
            )
        )
        by_name: dict[str, list[cri.Container]] = {}
        for c in found:
            by_name.setdefault(c.metadata.name, []).append(c)
        for items in by_name.values():
            items.sort(key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)
        return by_name

    # -- one container ---------------------------------------------------------------------

    async def _sync_container(
        self, spec: dict[str, Any], existing: list[cri.Container] | None, paths: dict[str, str]
    ) -> None:
        name = spec["name"]
        memo = self._containers.setdefault(name, _Container())
        latest = existing[0] if existing else None
        if latest is None:  # a new sandbox: the count goes on from the last container
            previous = memo.last_attempt
            if previous < 0:
                previous = api_restart_count(self._known_status(), name)
            await self._start(spec, memo, paths, attempt=previous + 1)
            return
        if latest.annotations.get(podspec.CONTAINER_HASH) != podspec.container_hash(spec):
            log.info("edged: pod %s: container %s changed; replacing it", self.key, name)
            self._event("Killing", f"Container {name} definition changed, will be restarted", name)
            await self._kill(latest.id, self._grace())
            await self._start(spec, memo, paths, attempt=latest.metadata.attempt + 1)
            await self._prune(existing or [], keep=1)
            return
        if latest.state == cri.CONTAINER_RUNNING:
            memo.waiting_reason = ""
            await self._rotate_log(name, latest)
            await self._probe(spec, memo, latest)
            return
        if latest.state == cri.CONTAINER_CREATED:
            try:
                await self.runtime.start_container(latest.id)
            except CRIError as exc:
                self._event("Failed", f"Error: {exc}", name, warning=True)
                raise
            self._event("Started", f"Started container {name}", name)
            return
        await self._maybe_restart(spec, memo, latest, paths, existing or [])

    async def _maybe_restart(
        self,
        spec: dict[str, Any],
        memo: _Container,
        latest: cri.Container,
        paths: dict[str, str],
        existing: list[cri.Container],
    ) -> None:
        status = await self.runtime.container_status(latest.id)
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and status.exit_code == 0):
            memo.waiting_reason = ""
            return
        now = time.monotonic()
        if memo.next_start == 0.0:
            memo.backoff = next_backoff(memo.backoff, memo.failed_at, now, self.timing)
            memo.failed_at = now
            memo.next_start = now + memo.backoff
            if memo.waiting_reason != CONFIG_ERROR:  # the config error says more; keep it
                memo.waiting_reason = "CrashLoopBackOff"
                memo.waiting_message = (
                    f"back-off {memo.backoff:.0f}s restarting failed container={spec['name']} "
                    f"pod={self.pod['metadata']['name']}"
                )
            pod = f"{self.name}_{self.namespace}({self.uid})"  # the kubelet's format.Pod
            message = f"Back-off restarting failed container {spec['name']} in pod {pod}"
            self._event("BackOff", message, spec["name"], warning=True)
        if now < memo.next_start:
            return
        await self._start(spec, memo, paths, attempt=latest.metadata.attempt + 1)
        memo.next_start = 0.0  # only once it started: a failed start keeps its own reason
        await self._prune(existing, keep=1)

    async def _start(
        self, spec: dict[str, Any], memo: _Container, paths: dict[str, str], *, attempt: int
    ) -> None:
        name = spec["name"]
        await self._ensure_image(spec, memo)  # sets its own reason (ErrImagePull, ...) on failure
        try:
            config = podspec.container_config(
                self.pod,
                spec,
                lookup=self.lookup,
                volume_paths=paths,
                subpath_dir=volumes.pod_dir(self.root, self.uid) / "volume-subpaths",
                restart_count=attempt,
                pod_ip=self.pod_ip,
                node_name=self.node_name,
                host_ip=self.host_ip,
            )
        except podspec.SpecError as exc:
            self._config_error(memo, name, str(exc))
            raise
        except (ValueError, KeyError, TypeError) as exc:  # a spec edged cannot read
            message = f"container {name}: {type(exc).__name__}: {exc}"
            self._config_error(memo, name, message)
            raise podspec.SpecError(message) from exc
        try:
            container_id = await self.runtime.create_container(
                self.sandbox_id, config, self._sandbox_config()
            )
            self._event("Created", f"Created container: {name}", name)
            await self.runtime.start_container(container_id)
        except CRIError as exc:
            self._event("Failed", f"Error: {exc}", name, warning=True)
            raise
        self._event("Started", f"Started container {name}", name)
        memo.waiting_reason = ""
        memo.liveness = _prober(spec.get("livenessProbe"))
        memo.readiness = _prober(spec.get("readinessProbe"))
        memo.startup = _prober(spec.get("startupProbe"))
        memo.probed_id = container_id
        memo.last_attempt = attempt
        log.info("edged: pod %s: started container %s (attempt %d)", self.key, name, attempt)

    def _config_error(self, memo: _Container, name: str, message: str) -> None:
        memo.waiting_reason, memo.waiting_message = CONFIG_ERROR, message
        self._event("Failed", f"Error: {message}", name, warning=True)

    async def _ensure_image(self, spec: dict[str, Any], memo: _Container) -> None:
        name, ref = spec["name"], spec["image"]
        policy = spec.get("imagePullPolicy") or (
            "Always" if ref.endswith(":latest") or ":" not in ref else "IfNotPresent"
        )
        present = await self.runtime.image_status(cri.ImageSpec(image=ref))
        if present is None and time.monotonic() < memo.pull_retry_at:
            memo.waiting_reason = "ImagePullBackOff"
            memo.waiting_message = f'Back-off pulling image "{ref}"'
            self._event("BackOff", memo.waiting_message, name)
            raise podspec.SpecError(memo.waiting_message)
        if policy == "Never" and present is None:
            memo.waiting_reason = "ErrImageNeverPull"
            memo.waiting_message = (
                f'Container image "{ref}" is not present with pull policy of Never'
            )
            self._event("ErrImageNeverPull", memo.waiting_message, name, warning=True)
            raise podspec.SpecError(memo.waiting_message)
        if policy == "Always" or present is None:
            await self._pull(spec, memo, local_copy=present is not None)
        else:
            self._event("Pulled", f'Container image "{ref}" already present on machine', name)

    async def _pull(self, spec: dict[str, Any], memo: _Container, *, local_copy: bool) -> None:
        """Pull the container's image; a failure backs off (ImagePullBackOff) unless the node
        has a copy, which is then used."""
        name, ref = spec["name"], spec["image"]
        self._event("Pulling", f'Pulling image "{ref}"', name)
        began = time.monotonic()
        try:
            await self.runtime.pull_image(cri.ImageSpec(image=ref))
        except CRIError as exc:
            self._event("Failed", f'Failed to pull image "{ref}": {exc}', name, warning=True)
            if not local_copy:
                memo.pull_backoff = next_backoff(
                    memo.pull_backoff, memo.pull_failed_at, began, self.timing
                )
                memo.pull_failed_at, memo.pull_retry_at = began, began + memo.pull_backoff
                memo.waiting_reason, memo.waiting_message = "ErrImagePull", str(exc)
                raise
            log.warning("edged: pull of %s failed, using the local copy: %s", ref, exc)
            return
        memo.pull_backoff = 0.0
        took = time.monotonic() - began
        self._event("Pulled", f'Successfully pulled image "{ref}" in {took:.3f}s', name)

    async def _rotate_log(self, name: str, container: cri.Container) -> None:
        log_file = (
            self.root / "pods" / self.uid / "logs" / name / f"{container.metadata.attempt}.log"
        )

        async def reopen() -> None:
            await self.runtime.reopen_container_log(container.id)

        try:
            rotated = await logs.rotate(
                log_file,
                reopen,
                max_bytes=self.timing.log_max_bytes,
                max_files=self.timing.log_max_files,
            )
        except (OSError, CRIError) as exc:  # the container goes on; the next round tries again
            log.warning("edged: pod %s: rotating the log of %s: %s", self.key, name, exc)
            return
        if rotated:
            log.info("edged: pod %s: rotated the log of %s", self.key, name)

    def _adopt_probes(self, spec: dict[str, Any], memo: _Container, container_id: str) -> None:
        """Probes for a running container edged did not start: they go on from what the API's
        pod status says of that very container (ready, started), so restarting edgecore does
        not flip its pods NotReady until their probes pass again."""
        memo.liveness = _prober(spec.get("livenessProbe"))
        memo.readiness = _prober(spec.get("readinessProbe"))
        memo.startup = _prober(spec.get("startupProbe"))
        memo.probed_id = container_id
        known = adopted_status(self._known_status(), spec["name"], container_id)
        if memo.readiness is not None and known.get("ready"):
            memo.readiness.passed = True
        if memo.startup is not None and known.get("started"):
            memo.startup.passed = True

    async def _probe(
        self, spec: dict[str, Any], memo: _Container, container: cri.Container
    ) -> None:
        if memo.probed_id != container.id:  # adopted after an edgecore restart
            self._adopt_probes(spec, memo, container.id)

        async def exec_fn(cmd: list[str], timeout: float) -> int:
            resp = await self.runtime.exec_sync(container.id, cmd, timeout)
            return int(resp.exit_code)

        if memo.startup is not None and not memo.startup.passed:
            if memo.startup.due():
                await self._run_probe(memo.startup, "Startup", spec, exec_fn)
                if memo.startup.failed:
                    await self._restart_unhealthy(spec, container, "startup")
            return
        for prober, kind in ((memo.liveness, "Liveness"), (memo.readiness, "Readiness")):
            if prober is None or not prober.due():
                continue
            await self._run_probe(prober, kind, spec, exec_fn)
            if kind == "Liveness" and prober.failed:
                await self._restart_unhealthy(spec, container, "liveness")
                memo.liveness = _prober(spec.get("livenessProbe"))

    async def _run_probe(
        self, prober: probes.Prober, kind: str, spec: dict[str, Any], exec_fn: probes.ExecFn
    ) -> None:
        """Run one probe and count its result; a failure is an Unhealthy event."""
        ok = await probes.run_probe(prober.spec, spec, self.pod_ip, exec_fn)
        prober.record(ok)
        if not ok:
            self._event("Unhealthy", f"{kind} probe failed", spec["name"], warning=True)

    async def _restart_unhealthy(
        self, spec: dict[str, Any], container: cri.Container, probe: str
    ) -> None:
        name = spec["name"]
        log.info("edged: pod %s: %s probe of %s failed; restarting", self.key, probe, name)
        self._event("Killing", f"Container {name} failed {probe} probe, will be restarted", name)
        await self._kill(container.id, self._grace())

    async def _kill(self, container_id: str, grace: int) -> None:
        with contextlib.suppress(CRINotFound):  # already gone; other failures are the caller's
            await self.runtime.stop_container(container_id, grace)

    async def _prune(self, existing: list[cri.Container], keep: int) -> None:
        """Remove dead containers beyond the newest `keep` (kept for lastState and logs)."""
        for old in existing[keep:]:
            try:
                await self.runtime.remove_container(old.id)
            except CRINotFound:
                pass
            except CRIError as exc:  # only dead containers; the next round tries again
                log.warning("edged: pod %s: removing old container: %s", self.key, exc)
                continue
            self._drop_logs(old)

    def _drop_logs(self, container: cri.Container) -> None:
        """The runtime leaves a removed container's log behind (the kubelet deletes it)."""
        folder = self.root / "pods" / self.uid / "logs" / container.metadata.name
        attempt = f"{container.metadata.attempt}.log"
        for path in [folder / attempt, *folder.glob(f"{attempt}.*")]:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("edged: pod %s: removing log %s: %s", self.key, path, exc)

    def _grace(self) -> int:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        spec_grace = self.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        return int(meta_grace if meta_grace is not None else spec_grace)

    # -- termination -----------------------------------------------------------------------

    async def _terminate_retrying(self) -> None:
        """Terminate until it succeeds: a sandbox that will not stop or go, or a volume folder
        that will not come off, keeps the pod here (and its IP and folders held) rather than
        being forgotten; retried with back-off from sync_interval up to backoff_max."""
        delay = self.timing.sync_interval
        while True:
            try:
                await self._terminate()
                return
            except (CRIError, volumes.VolumeError) as exc:
                log.error(
                    "edged: pod %s: clean-up failed, retrying in %.1fs: %s", self.key, delay, exc
                )
                self._event("FailedKillPod", f"error killing pod: {exc}", warning=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.timing.backoff_max)

    async def _terminate(self) -> None:
        grace = self._grace()
        log.info("edged: pod %s: stopping (grace %ds)", self.key, grace)
        if not self.sandbox_id:
            found = await self.runtime.list_pod_sandbox(
                cri.PodSandboxFilter(label_selector={podspec.POD_UID: self.uid})
            )
            self.sandbox_id = found[0].id if found else ""
        containers = await self.runtime.list_containers(
            cri.ContainerFilter(label_selector={podspec.POD_UID: self.uid})
        )
        running = [c for c in containers if c.state == cri.CONTAINER_RUNNING]
        for c in running:
            self._event("Killing", f"Stopping container {c.metadata.name}", c.metadata.name)
        await asyncio.gather(*(self._kill(c.id, grace) for c in running))
        for c in containers:
            with contextlib.suppress(CRINotFound):  # gone already: what we wanted
                await self.runtime.remove_container(c.id)
        await self._remove_sandbox()
        volumes.remove(self.root, self.uid)  # only now: the containers no longer use them
        await self.gone(self.pod)
        log.info("edged: pod %s: removed from the node", self.key)

    async def _remove_sandbox(self) -> None:
        if not self.sandbox_id:
            return
        # Stop (CNI releases the address) and remove; a sandbox already gone is fine, any other
        # failure is raised so the caller retries instead of leaking the sandbox and its IP.
        with contextlib.suppress(CRINotFound):
            await self.runtime.stop_pod_sandbox(self.sandbox_id)
        with contextlib.suppress(CRINotFound):
            await self.runtime.remove_pod_sandbox(self.sandbox_id)
        self.sandbox_id = ""

    # -- status ----------------------------------------------------------------------------

    async def _report_status(self) -> None:
        try:
            status = await self.status()
        except CRIError as exc:
            log.warning("edged: pod %s: no status: %s", self.key, exc)
            return
        # Conditions that did not change keep when they last did (from the last report, or
        # after a restart of edgecore from the status the API holds).
        keep_transition_times(status, self._last_status or self._known_status())
        if _comparable(status) != _comparable(self._last_status):
            self._last_status = status
            self._save_status(status)
            await self.report(self.pod, status)

    def _save_status(self, status: dict[str, Any]) -> None:
        """Kept on the node (pods/UID/status.json), so a restarted edgecore goes on from the
        status it last reported even when the cloud is away."""
        self._saved_status = status
        try:
            folder = private_tree(self.root, "pods", self.uid)
            certs.write_file(folder / "status.json", json.dumps(status).encode(), FILE_MODE)
        except OSError as exc:  # a full disk: the report still goes up; adoption is poorer
            log.warning("edged: pod %s: status not saved: %s", self.key, exc)

    def _known_status(self) -> dict[str, Any]:
        """The last status reported for this pod: saved on the node (read once), else the
        API's."""
        if self._saved_status is None:
            path = volumes.pod_dir(self.root, self.uid) / "status.json"
            try:
                saved = json.loads(path.read_bytes())
            except (OSError, ValueError):
                saved = None
            self._saved_status = saved if isinstance(saved, dict) else {}
        return self._saved_status or dict(self.pod.get("status") or {})

    async def status(self) -> dict[str, Any]:
        spec = self.pod.get("spec", {})
        current = await self._current_containers() if self.sandbox_id else {}
        statuses = []
        for c in spec.get("containers") or []:
            statuses.append(await self._container_status(c, current.get(c["name"], [])))
        init_statuses = []
        for c in spec.get("initContainers") or []:
            init_statuses.append(await self._init_container_status(c, current.get(c["name"], [])))
        return build_pod_status(
            spec,
            statuses,
            init_containers=init_statuses,
            pod_ip=self.pod_ip,
            started_at=self.started_at,
            host_ip=self.host_ip,
            generation=int(self.pod["metadata"].get("generation") or 0),
        )

    async def _init_container_status(
        self, spec: dict[str, Any], found: list[cri.Container]
    ) -> dict[str, Any]:
        """An init container's status: as a container's, but ready once it completed (the
        kubelet's rule; it has no readiness probe)."""
        out = await self._container_status(spec, found)
        out["ready"] = out["state"].get("terminated", {}).get("exitCode") == 0
        return out

    async def _container_status(
        self, spec: dict[str, Any], found: list[cri.Container]
    ) -> dict[str, Any]:
        memo = self._containers.get(spec["name"], _Container())
        out: dict[str, Any] = {
            "name": spec["name"],
            "image": spec["image"],
            "ready": False,
            "restartCount": 0,
            "started": False,
            "imageID": "",
        }
        if not found:
            # Until a container exists, the kubelet's default reason for it (any pod with init
            # containers: PodInitializing, for the init containers too).
            initializing = self.pod.get("spec", {}).get("initContainers")
            default = "PodInitializing" if initializing else "ContainerCreating"
            waiting = {"reason": memo.waiting_reason or default}
            if memo.waiting_reason and memo.waiting_message:
                waiting["message"] = memo.waiting_message
            out["state"] = {"waiting": waiting}
            return out
        latest = await self.runtime.container_status(found[0].id)
        out["restartCount"] = int(found[0].metadata.attempt)
        out["imageID"] = latest.image_ref
        out["containerID"] = f"containerd://{latest.id}"
        out["state"] = _state(latest)
        if memo.waiting_reason and latest.state == cri.CONTAINER_EXITED:
            out["lastState"] = out["state"]
            out["state"] = {
                "waiting": {"reason": memo.waiting_reason, "message": memo.waiting_message}
            }
        elif len(found) > 1:
            previous = await self.runtime.container_status(found[1].id)
            out["lastState"] = _state(previous)
        running = latest.state == cri.CONTAINER_RUNNING
        started = running and (memo.startup is None or memo.startup.passed)
        out["started"] = started
        out["ready"] = started and (memo.readiness is None or memo.readiness.passed)
        return out


def _prober(spec: dict[str, Any] | None) -> probes.Prober | None:
    return probes.Prober(spec) if spec else None


def _ts(ns: int) -> str:
    return rfc3339(datetime.fromtimestamp(ns / 1e9, UTC)) if ns else ""


def _state(status: cri.ContainerStatus) -> dict[str, Any]:
    if status.state == cri.CONTAINER_RUNNING:
        return {"running": {"startedAt": _ts(status.started_at)}}
    if status.state == cri.CONTAINER_EXITED:
        return {
            "terminated": {
                "exitCode": int(status.exit_code),
                "reason": status.reason or ("Completed" if status.exit_code == 0 else "Error"),
                "message": status.message,
                "startedAt": _ts(status.started_at),
                "finishedAt": _ts(status.finished_at),
                "containerID": f"containerd://{status.id}",
            }
        }
    return {"waiting": {"reason": "ContainerCreating"}}


def build_pod_status(
    spec: dict[str, Any],
    containers: list[dict[str, Any]],
    *,
    init_containers: list[dict[str, Any]] | None = None,
    pod_ip: str,
    started_at: str,
    host_ip: str = "",
    generation: int = 0,
) -> dict[str, Any]:
    """Phase and conditions from container and init container statuses, as the kubelet
    derives them; `observedGeneration` names the pod spec generation they describe
    (Kubernetes 1.33+)."""
    init = init_containers or []
    status: dict[str, Any] = {
        "phase": _phase(spec.get("restartPolicy", "Always"), containers, init),
        "conditions": _conditions(containers, init),
        "containerStatuses": containers,
        "qosClass": _qos(spec),
    }
    if init:
        status["initContainerStatuses"] = init
    if generation:
        status["observedGeneration"] = generation
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if host_ip:
        status["hostIP"] = host_ip
    if started_at:
        status["startTime"] = started_at
    return status


def _phase(policy: str, containers: list[dict[str, Any]], init: list[dict[str, Any]]) -> str:
    """The kubelet's getPhase: a failed init container fails the pod under restartPolicy
    Never; until the containers run the pod is Pending (so while it initializes)."""
    if policy == "Never" and any(_last_exit(c) not in (None, 0) for c in init):
        return "Failed"
    running = [c for c in containers if "running" in c["state"]]
    terminated = [c["state"]["terminated"] for c in containers if "terminated" in c["state"]]
    if containers and len(terminated) == len(containers) and policy != "Always":
        failed = any(t["exitCode"] != 0 for t in terminated)
        if failed:
            return "Failed" if policy == "Never" else "Running"
        return "Succeeded"
    if running or any(c["restartCount"] > 0 or "lastState" in c for c in containers):
        return "Running"
    return "Pending"


def _last_exit(container: dict[str, Any]) -> int | None:
    """The exit code of a container's last run: terminated now, or waiting after it."""
    state = container["state"]
    ended = state.get("terminated") or (
        (container.get("lastState") or {}).get("terminated") if "waiting" in state else None
    )
    return int(ended["exitCode"]) if ended else None


def _conditions(
    containers: list[dict[str, Any]], init: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """PodScheduled, Initialized (False, ContainersNotInitialized, until every init container
    completed — or a container started: initialized before), ContainersReady and Ready."""
    ready = bool(containers) and all(c["ready"] for c in containers)
    incomplete = [str(c["name"]) for c in init if not c["ready"]]
    started = any(_last_exit(c) is not None or "running" in c["state"] for c in containers)
    now = rfc3339()

    def condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        out = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        return out | ({"reason": reason, "message": message} if reason and not ok else {})

    return [
        condition("PodScheduled", True),
        condition(
            "Initialized",
            not incomplete or started,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
        condition("ContainersReady", ready),
        condition("Ready", ready),
    ]


def _qos(spec: dict[str, Any]) -> str:
    """The API server's QoS class: init containers count as containers do."""
    every = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    resources = [c.get("resources") or {} for c in every]
    if not any(r.get("limits") or r.get("requests") for r in resources):
        return "BestEffort"
    if all(
        r.get("limits")
        and r.get("limits") == (r.get("requests") or r.get("limits"))
        and {"cpu", "memory"} <= set(r["limits"])
        for r in resources
    ):
        return "Guaranteed"
    return "Burstable"


def keep_transition_times(status: dict[str, Any], previous: dict[str, Any]) -> None:
    """Give each condition whose status is unchanged its previous lastTransitionTime."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    for condition in status.get("conditions") or []:
        old = before.get(condition["type"])
        if old is not None and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = (
                old.get("lastTransitionTime") or (condition["lastTransitionTime"])
            )


def _comparable(status: dict[str, Any]) -> Any:
    """A status without its transition times, to tell whether anything really changed."""
    if not status:
        return None
    return {
        **status,
        "conditions": [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
        ],
    }
