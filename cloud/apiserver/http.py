"""The API server's HTTP face: routing Kubernetes URLs, auth, content negotiation, watch.

Requests are routed by hand, because the set of resources changes at run time (CRDs). Every
error leaves as a Kubernetes `Status` body with the matching HTTP code; the server keeps
serving whatever a request sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cloud.apiserver import discovery, openapi, tables, validation
from cloud.apiserver.certs import token_matches
from cloud.apiserver.errors import (
    APIError,
    bad_request,
    gone,
    method_not_allowed,
    too_large,
    unauthorized,
)
from cloud.apiserver.handlers import API
from cloud.apiserver.registry import storage_key
from cloud.apiserver.resources import ResourceInfo
from cloud.apiserver.storage import Gone, Obj, WatchEvent

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024
ANONYMOUS = {"/healthz", "/readyz", "/livez", "/version"}


@dataclass
class Target:
    """A parsed resource URL."""

    info: ResourceInfo
    namespace: str | None  # None: across namespaces (or cluster-scoped)
    name: str = ""
    subresource: str = ""


class HTTPFrontend:
    def __init__(
        self, api: API, token: str, *, bookmark_interval: float, max_body: int = MAX_BODY
    ) -> None:
        self.api = api
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.max_body = max_body
        self.log_streamer: Any = None  # set by edgecontroller: pods/log over the hub

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    # -- middlewares -----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except APIError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(too_large(self.max_body).status(), status=413)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("apiserver: %s %s failed", request.method, request.path)
            err = APIError(500, "InternalError", "an internal error occurred")
            return web.json_response(err.status(), status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in ANONYMOUS and not token_matches(
            request.headers.get("Authorization"), self.token
        ):
            raise unauthorized()
        response: web.StreamResponse = await handler(request)
        return response

    # -- routing ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if request.method == "GET":
            special = self._discovery(request, parts)
            if special is not None:
                return special
        target = self._target(parts)
        if target is None:
            raise not_found_path(request.path)
        return await self._resource(request, target)

    def _discovery(self, request: web.Request, parts: list[str]) -> web.StreamResponse | None:
        infos = self.api.registry.all()
        accept = request.headers.get("Accept", "")
        if parts == ["version"]:
            return web.json_response(discovery.version_info())
        if parts == ["api"]:
            if "apidiscovery.k8s.io" in accept and ";v=v2;" in accept + ";":
                return _aggregated(discovery.aggregated_discovery(infos, core=True))
            return web.json_response(discovery.api_versions())
        if parts == ["apis"]:
            if "apidiscovery.k8s.io" in accept and ";v=v2;" in accept + ";":
                return _aggregated(discovery.aggregated_discovery(infos, core=False))
            return web.json_response(discovery.api_group_list(infos))
        if parts == ["api", "v1"]:
            return web.json_response(discovery.api_resource_list(infos, "v1"))
        if len(parts) == 3 and parts[0] == "apis":
            gv = f"{parts[1]}/{parts[2]}"
            if (parts[1], parts[2]) in self.api.registry.group_versions():
                return web.json_response(discovery.api_resource_list(infos, gv))
            return None
        if parts[:2] == ["openapi", "v3"]:
            if len(parts) == 2:
                return web.json_response(openapi.openapi_v3_index(infos))
            doc = openapi.openapi_v3_document(
                infos,
                "/".join(parts[3:]) if parts[2] == "apis" else parts[3] if len(parts) > 3 else "",
            )
            if doc is None:
                raise not_found_path(request.path)
            return web.json_response(doc)
        return None

    def _target(self, parts: list[str]) -> Target | None:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        reg = self.api.registry
        ns: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        info = reg.lookup(group, version, rest[0])
        if info is None:
            return None
        if ns is not None and not info.namespaced:
            return None
        target = Target(info, ns, *rest[1:])
        if target.subresource and target.subresource not in info.subresources:
            return None
        return target

    # -- resource verbs --------------------------------------------------------------------

    async def _resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        method = request.method
        ns = t.namespace or ""
        if t.subresource == "log":
            return await self._pod_log(request, t)
        if not t.name:
            if method == "GET":
                if q.get("watch") in ("1", "true"):
                    return await self._watch(request, t)
                listing = await self.api.list(
                    t.info,
                    t.namespace if t.info.namespaced else None,
                    label_selector=q.get("labelSelector", ""),
                    field_selector=q.get("fieldSelector", ""),
                    limit=_int(q.get("limit", "0"), "limit"),
                    continue_token=q.get("continue", ""),
                )
                return self._respond(request, t.info, listing["items"], listing)
            if method == "POST":
                obj, warnings = await self._body_object(request, t.info)
                created = await self.api.create(t.info, ns, obj)
                return _json(created, 201, warnings)
            if method == "DELETE":
                options = await self._delete_options(request)
                listing = await self.api.delete_collection(
                    t.info,
                    t.namespace,
                    q.get("labelSelector", ""),
                    q.get("fieldSelector", ""),
                    options,
                )
                return web.json_response(listing)
            raise method_not_allowed(f"{method} is not supported on a collection")
        if method == "GET":
            obj = await self.api.get(t.info, ns, t.name)
            return self._respond(request, t.info, [obj], None)
        if method == "PUT":
            obj, warnings = await self._body_object(request, t.info)
            return _json(
                await self.api.update(t.info, ns, t.name, obj, t.subresource), 200, warnings
            )
        if method == "PATCH":
            body, _ = validation.decode(await request.read(), "application/json")
            ctype = request.headers.get("Content-Type", "")
            patched = await self.api.patch(t.info, ns, t.name, ctype, body, t.subresource)
            warnings = validation.check(t.info, patched, [], _mode(request, "Ignore"))
            return _json(patched, 200, warnings)
        if method == "DELETE":
            options = await self._delete_options(request)
            return web.json_response(await self.api.delete(t.info, ns, t.name, options))
        raise method_not_allowed(f"{method} is not supported here")

    async def _body_object(self, request: web.Request, info: ResourceInfo) -> tuple[Obj, list[str]]:
        if request.content_length and request.content_length > self.max_body:
            raise too_large(self.max_body)
        body, duplicates = validation.decode(
            await request.read(), request.headers.get("Content-Type", "application/json")
        )
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON or YAML object")
        warnings = validation.check(info, body, duplicates, _mode(request, "Warn"))
        return body, warnings

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        options: dict[str, Any] = {}
        if raw.strip():
            decoded, _ = validation.decode(raw, "application/json")
            if not isinstance(decoded, dict):
                raise bad_request("DeleteOptions must be a JSON object")
            options = decoded
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = _int(
                request.query["gracePeriodSeconds"], "gracePeriodSeconds"
            )
        return options

    def _respond(
        self, request: web.Request, info: ResourceInfo, objs: list[Obj], listing: Obj | None
    ) -> web.Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            meta = listing["metadata"] if listing else {}
            table = tables.to_table(
                info,
                objs,
                include_object=tables.include_object_param(dict(request.query)),
                list_meta=meta,
            )
            return web.json_response(table)
        return web.json_response(listing if listing is not None else objs[0])

    # -- watch -----------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        watch = _Watch(
            request, t, self.api.matcher(q.get("labelSelector", ""), q.get("fieldSelector", ""))
        )
        await watch.response.prepare(request)
        ns = t.namespace if t.info.namespaced else None
        since = q.get("resourceVersion", "")
        initial = q.get("sendInitialEvents") in ("1", "true")
        start = int(since) if since.isdigit() else 0
        if start == 0 or initial:
            listing = await self.api.list(
                t.info,
                ns,
                label_selector=q.get("labelSelector", ""),
                field_selector=q.get("fieldSelector", ""),
            )
            for item in listing["items"]:
                await watch.send("ADDED", item)
            start = int(listing["metadata"]["resourceVersion"])
            if initial:  # the watch-list protocol: tell the client its initial list is complete
                await watch.bookmark(start, initial_events_end=True)
        timeout = float(q.get("timeoutSeconds") or random.uniform(1800, 3600))
        await self._follow(
            watch, self.api.storage.watch(storage_key(t.info), ns, start), start, timeout
        )
        with contextlib.suppress(ConnectionResetError):
            await watch.response.write_eof()
        return watch.response

    async def _follow(
        self,
        watch: _Watch,
        stream: AsyncGenerator[WatchEvent, None],
        last_rv: int,
        timeout: float,
    ) -> None:
        """Relay stored events until the timeout, with bookmarks while idle if asked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_event = asyncio.ensure_future(anext(stream))
        try:
            while (wait := min(self.bookmark_interval, deadline - loop.time())) > 0:
                done, _ = await asyncio.wait({next_event}, timeout=wait)
                if not done:
                    if watch.bookmarks:
                        await watch.bookmark(max(last_rv, await self.api.storage.current_rv()))
                    continue
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                except Gone as exc:
                    await watch.send("ERROR", gone(str(exc)).status())
                    return
                next_event = asyncio.ensure_future(anext(stream))
                last_rv = event.rv
                if watch.match is None or watch.match(event.object):
                    await watch.send(event.type, event.object)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            next_event.cancel()
            with contextlib.suppress(BaseException):
                await next_event
            await stream.aclose()

    async def _pod_log(self, request: web.Request, t: Target) -> web.StreamResponse:
        pod = await self.api.get(t.info, t.namespace or "", t.name)
        if self.log_streamer is None:
            raise APIError(
                503,
                "ServiceUnavailable",
                "pod logs are served by edgecontroller, which is not running",
            )
        response: web.StreamResponse = await self.log_streamer(request, pod)
        return response


class _Watch:
    """One watch response: how to write events (as objects or Table rows) and bookmarks."""

    def __init__(self, request: web.Request, t: Target, match: Any) -> None:
        self.info = t.info
        self.match = match
        self.as_table = tables.wants_table(request.headers.get("Accept", ""))
        self.include = tables.include_object_param(dict(request.query))
        self.bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        self.response = web.StreamResponse(headers={"Content-Type": "application/json"})
        self.response.enable_chunked_encoding()

    async def send(self, kind: str, obj: Obj) -> None:
        if self.as_table and kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = tables.to_table(self.info, [obj], include_object=self.include)
        line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
        await self.response.write(line.encode())

    async def bookmark(self, rv: int, *, initial_events_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        await self.send(
            "BOOKMARK",
            {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": meta},
        )


def not_found_path(path: str) -> APIError:
    return APIError(404, "NotFound", f"the server could not find the requested resource ({path})")


def _aggregated(body: Obj) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE}
    )


def _json(obj: Obj, status: int, warnings: list[str]) -> web.Response:
    response = web.json_response(obj, status=status)
    for text in warnings:  # one Warning header each, text quoted as RFC 9111 says
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        response.headers.add("Warning", f'299 - "{quoted}"')
    return response


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{what} must be an integer, not {value!r}") from None


def _mode(request: web.Request, default: str) -> str:
    return request.query.get("fieldValidation", default)
