"""cloudcore's settings: every flag, its default, and what it means. Loaded once in main()."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.settings import setting

MiB = 1024 * 1024


@dataclass(frozen=True)
class CloudSettings:
    data_dir: Path = setting(None, "directory for cloudcore's state (SQLite files)", required=True)
    hub_listen: str = setting("0.0.0.0:10000", "HOST:PORT where cloudhub serves HubService")
    insecure_hub: bool = setting(
        False,
        "serve HubService in plaintext and believe the node-name each stream claims, with no "
        "join (for debugging only: anyone who reaches the port can pose as any node)",
    )
    bootstrap_listen: str = setting(
        "0.0.0.0:10002",
        "HOST:PORT where nodes spend join tokens for their first certificate (BootstrapService, "
        "plaintext; nothing secret crosses it)",
    )
    hub_advertise_address: str = setting(
        "",
        "extra host names and IPs (comma-separated) nodes dial the hub by; the hub's TLS "
        "certificate names them besides 127.0.0.1, localhost and this host's name",
    )
    node_cert_lifetime: float = setting(
        30 * 86400.0, "seconds a node's client certificate is valid (nodes renew at 80 %%)"
    )
    revocation_check_period: float = setting(
        10.0,
        "seconds between checks that connected nodes' certificates were not revoked since "
        "they connected (`keadm node revoke`)",
    )
    max_message_bytes: int = setting(4 * MiB, "largest gRPC message cloudhub accepts or sends")
    keepalive_timeout: float = setting(30.0, "seconds of silence after which a node is dropped")
    resend_interval: float = setting(5.0, "seconds before an un-acked downstream message is resent")
    max_inflight: int = setting(2000, "most un-acked downstream messages per node at a time")
    batch_size: int = setting(100, "most envelopes per stream message")
    dedup_retention: float = setting(
        86400.0, "seconds an upstream message id is remembered for de-duplication"
    )
    node_authorization: bool = setting(
        True,
        "refuse what an edge node may not do, as Kubernetes' NodeRestriction does for kubelets: "
        "writing other nodes' Node, Lease, pod or device status, deleting their pods, reading "
        "configmaps/secrets its pods do not reference (answered with a 403 error, counted in "
        "kubeedge_cloudhub_denied_total); --no-node-authorization turns it off, for debugging "
        "only",
    )
    kubeconfig: str = setting(
        "",
        "kubeconfig of the Kubernetes cluster cloudcore works on (required; `keadm up` starts "
        "one on this machine and passes it)",
    )
    kubelet_tunnel_socket: str = setting(
        "",
        "unix socket where cloudcore answers kube-apiserver's kubelet requests (kubectl logs) "
        "for edge nodes; the control plane's egress selector points there (keadm up does this)",
    )
    stream_connect_timeout: float = setting(
        10.0, "seconds cloudstream waits for a tunnel's CONNECT request, or to dial its target"
    )
    stream_max_tunnels: int = setting(
        256, "most tunnels (kubelet requests, proxied connections) cloudstream keeps open at once"
    )
    stop_grace: float = setting(5.0, "seconds open streams get to finish on shutdown")
    metrics_listen: str = setting(
        "127.0.0.1:9091", "HOST:PORT where cloudcore serves Prometheus metrics (GET /metrics)"
    )
    node_monitor_period: float = setting(
        5.0, "seconds between checks that each edge node still renews its Lease"
    )
    node_grace_period: float = setting(
        40.0,
        "seconds a disconnected edge node may go without renewing its Lease before its Ready "
        "condition becomes Unknown",
    )
    sync_period: float = setting(
        5.0, "seconds between comparisons of what nodes acknowledged (ObjectSync) with the API"
    )
    objectsync_qps: float = setting(
        50.0,
        "most ObjectSync status writes per second (acks are coalesced per object; bursts wait "
        "instead of flooding the API server's watch cache)",
    )
    objectsync_burst: int = setting(
        100, "ObjectSync writes allowed at once before --objectsync-qps applies"
    )
    kube_watch_timeout: float = setting(
        30.0, "seconds each watch request to the Kubernetes API lasts before it is renewed"
    )
    log_timeout: float = setting(
        30.0,
        "seconds `kubectl logs` waits for the node's first log bytes (and, without -f, "
        "for each next chunk)",
    )
    device_status_batch: float = setting(
        0.01, "seconds devicecontroller gathers reported device values before writing status"
    )
    device_api_workers: int = setting(
        4, "threads devicecontroller writes Device status with (devices written in parallel)"
    )
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
