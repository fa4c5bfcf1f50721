"""apiserver: cloudcore's embedded Kubernetes-compatible API server, as a bus module.

On start it opens the SQLite store (DATA_DIR/apiserver.db), serves every stored CRD, installs
kubeedge's CRDs and the system namespaces, makes (once) a CA, a serving certificate and an
admin token under DATA_DIR/pki, writes DATA_DIR/kubeconfig, and serves HTTPS on --api-listen.
The other cloud modules never call it directly: they read DATA_DIR/kubeconfig with the
official kubernetes client, exactly as they would a real cluster's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

from aiohttp import web

from cloud.apiserver.certs import ensure_pki, write_kubeconfig
from cloud.apiserver.handlers import API
from cloud.apiserver.http import HTTPFrontend
from cloud.apiserver.registry import Registry
from cloud.apiserver.storage import Storage
from cloud.settings import CloudSettings
from common.names import Group, Module
from common.settings import split_host_port

log = logging.getLogger(__name__)


class APIServer:
    name: str = Module.APISERVER
    group: str = Group.APISERVER

    def __init__(self, settings: CloudSettings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.kubeconfig = self.data_dir / "kubeconfig"
        self.started = asyncio.Event()
        self.port = 0
        self.storage: Storage | None = None
        self.frontend: HTTPFrontend | None = None
        self._runner: web.AppRunner | None = None

    async def run(self) -> None:
        if self._runner is None:
            await self._start()
        await asyncio.Event().wait()

    async def _start(self) -> None:
        cfg = self.settings
        host, port = split_host_port(cfg.api_listen, "--api-listen")
        self.storage = Storage(self.data_dir / "apiserver.db", cfg.watch_history)
        api = API(self.storage, Registry())
        await api.bootstrap()
        hosts = [host] if host not in ("0.0.0.0", "::", "") else [socket.gethostname()]
        pki = ensure_pki(self.data_dir / "pki", hosts)
        self.frontend = HTTPFrontend(
            api,
            pki.admin_token,
            bookmark_interval=cfg.watch_bookmark_interval,
            max_body=cfg.max_request_bytes,
        )
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(pki.serving_cert, pki.serving_key)
        runner = web.AppRunner(
            self.frontend.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=cfg.stop_grace,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        self._runner = runner
        self.port = _bound_port(runner) or port
        client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        server = f"https://{client_host}:{self.port}"
        write_kubeconfig(
            self.kubeconfig,
            server=server,
            ca_cert_pem=pki.ca_cert.read_bytes(),
            token=pki.admin_token,
        )
        log.info("apiserver serving on %s; kubeconfig: %s", server, self.kubeconfig)
        self.started.set()

    async def close(self) -> None:
        if self.storage is not None:
            self.storage.end_watches()  # open watches would hold the shutdown for its grace
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.storage is not None:
            self.storage.close()
            self.storage = None


def _bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (the listen port may be 0 in tests)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return 0
