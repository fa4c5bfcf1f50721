"""edgecore's settings: every flag, its default, and what it means. Loaded once in main()."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.settings import setting

MiB = 1024 * 1024


@dataclass(frozen=True)
class EdgeSettings:
    data_dir: Path = setting(
        None, "directory for edgecore's state (SQLite store, outbox)", required=True
    )
    node_name: str = setting(None, "this edge node's name (a Kubernetes node name)", required=True)
    cloud: str = setting("127.0.0.1:10000", "HOST:PORT of cloudcore's HubService")
    max_message_bytes: int = setting(4 * MiB, "largest gRPC message edgehub sends or accepts")
    keepalive_interval: float = setting(15.0, "seconds between keepalives to the cloud")
    keepalive_timeout: float = setting(30.0, "seconds of cloud silence before reconnecting")
    reconnect_initial: float = setting(
        1.0, "first reconnect delay in seconds (then doubled, jittered)"
    )
    reconnect_max: float = setting(30.0, "longest reconnect delay in seconds")
    resend_interval: float = setting(5.0, "seconds before an un-acked upstream message is resent")
    max_inflight: int = setting(2000, "most un-acked upstream messages at a time")
    batch_size: int = setting(100, "most envelopes per stream message")
    edged: bool = setting(True, "run pods (--no-edged: a node for the hub and devices only)")
    runtime_endpoint: str = setting(
        "", "CRI endpoint of an existing containerd (unix:///...); empty: start a private one"
    )
    images_dir: str = setting("", "OCI archives imported at start (default: DATA_DIR/images)")
    cni_bridge: str = setting("kubeedge0", "Linux bridge of the private containerd's pod network")
    pod_cidr: str = setting("10.244.0.0/24", "subnet pod IPs are allocated from")
    node_status_interval: float = setting(10.0, "seconds between node status reports")
    lease_duration: int = setting(40, "seconds the node's Lease is valid without renewal")
    lease_renew_interval: float = setting(10.0, "seconds between Lease renewals")
    pod_sync_interval: float = setting(1.0, "seconds between checks of each pod's containers")
    crash_backoff_initial: float = setting(
        10.0, "first delay before restarting a crashed container"
    )
    crash_backoff_max: float = setting(300.0, "longest delay before restarting a crashed container")
    stop_grace: float = setting(5.0, "seconds modules get to stop on shutdown")
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
