"""The API server's PKI, kubeconfig, discovery documents and OpenAPI v3 documents."""

from __future__ import annotations

import base64
import ipaddress
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.apiserver import certs, discovery, openapi
from cloud.apiserver.resources import BUILTIN, ResourceInfo, from_crd
from common.errors import ConfigError

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.kubeedge.io"},
    "spec": {
        "group": "example.kubeedge.io",
        "scope": "Namespaced",
        "names": {
            "kind": "Widget",
            "plural": "widgets",
            "singular": "widget",
            "shortNames": ["wd"],
            "categories": ["all"],
        },
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": False,
                "schema": {"openAPIV3Schema": {"type": "object"}},
            },
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}, "scale": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}},
                            }
                        },
                    }
                },
            },
        ],
    },
}
GROUP = "example.kubeedge.io"


def all_infos() -> list[ResourceInfo]:
    return [*BUILTIN, *from_crd(WIDGET_CRD)]


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return ips, set(ext.get_values_for_type(x509.DNSName))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tls_handshake(pki: certs.Pki, server_hostname: str) -> None:
    """Complete a TLS handshake in memory: a client trusting only the CA against the server."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.serving_cert, pki.serving_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


# -- PKI -----------------------------------------------------------------------------------


def test_pki_is_created_once_and_reused_unchanged(tmp_path: Path) -> None:
    """A second ensure_pki with the same hosts keeps every file and the token as they were."""
    first = certs.ensure_pki(tmp_path / "pki", ["10.1.2.3"])
    files = [first.ca_cert, first.ca_key, first.serving_cert, first.serving_key]
    before = {p: p.read_bytes() for p in files}
    second = certs.ensure_pki(tmp_path / "pki", ["10.1.2.3"])
    assert second == first
    assert {p: p.read_bytes() for p in files} == before
    assert len(first.admin_token) >= 40


def test_secrets_are_written_owner_only(tmp_path: Path) -> None:
    """Private keys and the token file are mode 0600."""
    pki = certs.ensure_pki(tmp_path / "pki", [])
    token_file = tmp_path / "pki" / certs.TOKEN_FILE
    assert token_file.read_text().strip() == pki.admin_token
    for path in (pki.ca_key, pki.serving_key, token_file):
        assert mode_of(path) == 0o600, path


def test_serving_cert_is_signed_by_the_ca_and_names_every_host(tmp_path: Path) -> None:
    """The serving cert verifies against the CA, carries IP and DNS SANs, and is for serverAuth."""
    pki = certs.ensure_pki(tmp_path / "pki", ["192.168.7.9", "[fd00::5]", "Edge.Example.com"])
    ca, serving = cert_of(pki.ca_cert), cert_of(pki.serving_cert)
    serving.verify_directly_issued_by(ca)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubeedge-py-ca"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not serving.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    ips, names = sans(serving)
    assert ips == {"127.0.0.1", "192.168.7.9", str(ipaddress.ip_address("fd00::5"))}
    assert names == {"localhost", "edge.example.com"}
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    assert 364 <= (serving.not_valid_after_utc - serving.not_valid_before_utc).days <= 366


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "edge.example.com"])
def test_tls_client_trusting_the_ca_accepts_the_server(tmp_path: Path, hostname: str) -> None:
    """A TLS client that trusts only the CA completes a handshake for every named host."""
    pki = certs.ensure_pki(tmp_path / "pki", ["edge.example.com"])
    tls_handshake(pki, hostname)


def test_tls_client_rejects_a_host_the_cert_does_not_name(tmp_path: Path) -> None:
    """Hostname verification fails for a name that is not among the SANs."""
    pki = certs.ensure_pki(tmp_path / "pki", [])
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(pki, "elsewhere.example.com")


def test_new_host_reissues_only_the_serving_cert(tmp_path: Path) -> None:
    """Asking for a host the serving cert lacks issues a new one from the same CA and token."""
    first = certs.ensure_pki(tmp_path / "pki", ["10.0.0.1"])
    ca_before, key_before = first.ca_cert.read_bytes(), first.ca_key.read_bytes()
    serving_before = first.serving_cert.read_bytes()
    second = certs.ensure_pki(tmp_path / "pki", ["10.0.0.2"])
    assert second.admin_token == first.admin_token
    assert second.ca_cert.read_bytes() == ca_before
    assert second.ca_key.read_bytes() == key_before
    assert second.serving_cert.read_bytes() != serving_before
    ips, _ = sans(cert_of(second.serving_cert))
    assert "10.0.0.2" in ips
    cert_of(second.serving_cert).verify_directly_issued_by(cert_of(second.ca_cert))


def test_serving_key_not_matching_its_cert_is_reissued(tmp_path: Path) -> None:
    """A serving key that does not belong to the serving cert gets a fresh pair."""
    first = certs.ensure_pki(tmp_path / "pki", [])
    other = certs.ensure_pki(tmp_path / "other", [])
    first.serving_key.write_bytes(other.serving_key.read_bytes())
    second = certs.ensure_pki(tmp_path / "pki", [])
    tls_handshake(second, "localhost")


def test_unreadable_ca_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that is not PEM raises ConfigError instead of being silently replaced."""
    pki = certs.ensure_pki(tmp_path / "pki", [])
    pki.ca_cert.write_text("not a certificate")
    with pytest.raises(ConfigError):
        certs.ensure_pki(tmp_path / "pki", [])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("Bearer s3cret", True, id="exact"),
        pytest.param("bearer s3cret", True, id="scheme-case-insensitive"),
        pytest.param("Bearer s3cre", False, id="prefix-of-token"),
        pytest.param("Bearer s3cretX", False, id="longer-token"),
        pytest.param("Basic s3cret", False, id="other-scheme"),
        pytest.param("s3cret", False, id="no-scheme"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="missing"),
    ],
)
def test_token_matches(header: str | None, expected: bool) -> None:
    """Only `Bearer <token>` is accepted."""
    assert certs.token_matches(header, "s3cret") is expected


def test_empty_token_never_matches() -> None:
    """A server with no token configured accepts no bearer header at all."""
    assert not certs.token_matches("Bearer ", "")


def test_kubeconfig_names_server_token_and_ca(tmp_path: Path) -> None:
    """The kubeconfig loads as YAML, points at the server with the CA and token, mode 0600."""
    pki = certs.ensure_pki(tmp_path / "pki", [])
    path = tmp_path / "kube" / "config"
    ca_pem = pki.ca_cert.read_bytes()
    certs.write_kubeconfig(
        path, server="https://127.0.0.1:6443", ca_cert_pem=ca_pem, token=pki.admin_token
    )
    assert mode_of(path) == 0o600
    cfg = yaml.safe_load(path.read_text())
    assert (cfg["apiVersion"], cfg["kind"]) == ("v1", "Config")
    context = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
    cluster = next(c for c in cfg["clusters"] if c["name"] == context["cluster"])["cluster"]
    user = next(u for u in cfg["users"] if u["name"] == context["user"])["user"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca_pem
    assert user == {"token": pki.admin_token}


# -- discovery -----------------------------------------------------------------------------


def test_api_versions_offers_core_v1() -> None:
    """GET /api answers an APIVersions with v1."""
    body = discovery.api_versions()
    assert body["kind"] == "APIVersions"
    assert body["versions"] == ["v1"]
    assert body["serverAddressByClientCIDRs"][0]["clientCIDR"] == "0.0.0.0/0"


def test_core_resource_list_includes_subresources() -> None:
    """GET /api/v1 lists pods with its status and log subresources, and no named group."""
    body = discovery.api_resource_list(all_infos(), "v1")
    assert (body["kind"], body["groupVersion"]) == ("APIResourceList", "v1")
    by_name = {r["name"]: r for r in body["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"]
    assert by_name["pods"]["namespaced"] is True
    assert "watch" in by_name["pods"]["verbs"]
    assert by_name["pods/status"] == {
        "name": "pods/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "patch", "update"],
    }
    assert by_name["pods/log"]["verbs"] == ["get"]
    assert by_name["pods/log"]["kind"] == "Pod"
    assert by_name["namespaces"]["namespaced"] is False
    assert "leases" not in by_name and "widgets" not in by_name


def test_group_list_prefers_the_ga_version_of_a_crd() -> None:
    """GET /apis lists each named group once, its GA version preferred over a beta."""
    groups = {g["name"]: g for g in discovery.api_group_list(all_infos())["groups"]}
    assert "" not in groups
    widget = groups[GROUP]
    assert [v["version"] for v in widget["versions"]] == ["v1", "v1beta1"]
    assert widget["preferredVersion"] == {"groupVersion": f"{GROUP}/v1", "version": "v1"}
    assert groups["coordination.k8s.io"]["versions"] == [
        {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}
    ]


def test_crd_resource_list_describes_scale_as_autoscaling() -> None:
    """A CRD's scale subresource answers with autoscaling/v1 Scale."""
    body = discovery.api_resource_list(all_infos(), f"{GROUP}/v1")
    by_name = {r["name"]: r for r in body["resources"]}
    assert by_name["widgets"]["kind"] == "Widget"
    assert by_name["widgets"]["categories"] == ["all"]
    assert by_name["widgets/scale"]["group"] == "autoscaling"
    assert by_name["widgets/scale"]["kind"] == "Scale"
    assert by_name["widgets/status"]["kind"] == "Widget"


def test_unknown_group_version_lists_no_resources() -> None:
    """An unknown group version gives an empty resource list."""
    assert discovery.api_resource_list(all_infos(), "nope.example/v9")["resources"] == []


def test_aggregated_core_discovery_shape() -> None:
    """/api in aggregated form: one unnamed group, v1, pods with scope and subresources."""
    body = discovery.aggregated_discovery(all_infos(), core=True)
    assert (body["apiVersion"], body["kind"]) == ("apidiscovery.k8s.io/v2", "APIGroupDiscoveryList")
    [item] = body["items"]
    assert item["metadata"]["name"] == ""
    [version] = item["versions"]
    assert (version["version"], version["freshness"]) == ("v1", "Current")
    pods = next(r for r in version["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["scope"] == "Namespaced"
    assert pods["singularResource"] == "pod"
    assert pods["shortNames"] == ["po"]
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert subs["log"] == {
        "subresource": "log",
        "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
        "verbs": ["get"],
    }
    nodes = next(r for r in version["resources"] if r["resource"] == "nodes")
    assert nodes["scope"] == "Cluster"


def test_aggregated_group_discovery_shape() -> None:
    """/apis in aggregated form: named groups only, versions best first, CRD resources described."""
    body = discovery.aggregated_discovery(all_infos(), core=False)
    items = {i["metadata"]["name"]: i for i in body["items"]}
    assert "" not in items
    assert {"coordination.k8s.io", "apiextensions.k8s.io", GROUP} <= items.keys()
    versions = items[GROUP]["versions"]
    assert [v["version"] for v in versions] == ["v1", "v1beta1"]
    [widgets] = versions[0]["resources"]
    assert widgets["resource"] == "widgets"
    assert widgets["responseKind"] == {"group": GROUP, "version": "v1", "kind": "Widget"}
    assert widgets["shortNames"] == ["wd"]
    scale = next(s for s in widgets["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert "subresources" not in versions[1]["resources"][0]


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        pytest.param(["v1", "v2"], ["v2", "v1"], id="ga-highest-first"),
        pytest.param(
            ["v1alpha1", "v1beta1", "v1", "v1beta2"],
            ["v1", "v1beta2", "v1beta1", "v1alpha1"],
            id="ga-beta-alpha",
        ),
        pytest.param(["foo", "v1alpha1", "bar"], ["v1alpha1", "bar", "foo"], id="odd-last"),
    ],
)
def test_version_priority(versions: list[str], expected: list[str]) -> None:
    """Versions sort the way Kubernetes prefers them."""
    assert sorted(versions, key=discovery.version_priority) == expected


def test_version_info() -> None:
    """GET /version names Kubernetes 1.31 and every field clients expect."""
    info = discovery.version_info()
    assert (info["major"], info["minor"]) == ("1", "31")
    assert info["gitVersion"] == "v1.31.0-kubeedge-py"
    assert info["platform"].count("/") == 1
    expected = {"buildDate", "compiler", "gitCommit", "gitTreeState", "goVersion"}
    assert expected <= info.keys()


# -- OpenAPI v3 ----------------------------------------------------------------------------


def all_documents() -> dict[str, dict[str, Any]]:
    infos = all_infos()
    out = {}
    for gv in ("v1", "coordination.k8s.io/v1", "apiextensions.k8s.io/v1", f"{GROUP}/v1"):
        doc = openapi.openapi_v3_document(infos, gv)
        assert doc is not None
        out[gv] = doc
    return out


def patch_operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, item["patch"]) for path, item in doc["paths"].items() if "patch" in item]


def kubectl_finds_field_validation(
    doc: dict[str, Any], group: str, version: str, kind: str
) -> bool:
    """kubectl's check: some PATCH op tagged with this GVK takes a fieldValidation query param."""
    target = {"group": group, "version": version, "kind": kind}
    for _, op in patch_operations(doc):
        if op.get("x-kubernetes-group-version-kind") == target:
            return any(
                p["name"] == "fieldValidation" and p["in"] == "query" for p in op["parameters"]
            )
    return False


def test_index_lists_every_group_version_with_the_doc_hash() -> None:
    """Each index entry's hash is the hash of the document its URL serves."""
    infos = all_infos()
    paths = openapi.openapi_v3_index(infos)["paths"]
    expected = {
        "api/v1",
        "apis/coordination.k8s.io/v1",
        "apis/apiextensions.k8s.io/v1",
        f"apis/{GROUP}/v1",
        f"apis/{GROUP}/v1beta1",
    }
    assert set(paths) == expected
    for key, entry in paths.items():
        url, _, query = entry["serverRelativeURL"].partition("?hash=")
        assert url == f"/openapi/v3/{key}"
        gv = openapi.group_version_of(key)
        assert gv is not None
        assert query == openapi.doc_hash(openapi.openapi_v3_document(infos, gv))


def test_hash_is_stable_and_tracks_content() -> None:
    """The hash ignores the order of the infos but changes when a kind is added."""
    infos = all_infos()
    doc = openapi.openapi_v3_document(infos, "v1")
    again = openapi.openapi_v3_document(list(reversed(infos)), "v1")
    assert openapi.doc_hash(doc) == openapi.doc_hash(again)
    digest = openapi.doc_hash(doc)
    assert len(digest) == 128 and digest == digest.upper()
    extra = ResourceInfo("", "v1", "Thing", "things", "thing", True)
    assert openapi.doc_hash(openapi.openapi_v3_document([*infos, extra], "v1")) != digest


def test_every_patch_operation_has_gvk_and_field_validation() -> None:
    """Every PATCH op carries a GVK map and a fieldValidation query parameter."""
    for gv, doc in all_documents().items():
        ops = patch_operations(doc)
        assert ops, gv
        for path, op in ops:
            target = op["x-kubernetes-group-version-kind"]
            assert set(target) == {"group", "version", "kind"}, path
            params = {(p["name"], p["in"]) for p in op["parameters"]}
            assert ("fieldValidation", "query") in params, path


@pytest.mark.parametrize(
    ("gv", "group", "kind"),
    [
        pytest.param("v1", "", "ConfigMap", id="configmap"),
        pytest.param("v1", "", "Namespace", id="namespace-crd-fallback"),
        pytest.param("v1", "", "Pod", id="pod"),
        pytest.param("coordination.k8s.io/v1", "coordination.k8s.io", "Lease", id="lease"),
        pytest.param(f"{GROUP}/v1", GROUP, "Widget", id="crd"),
    ],
)
def test_kubectl_leaves_validation_to_the_server(gv: str, group: str, kind: str) -> None:
    """kubectl's query-parameter check succeeds for built-in and custom kinds."""
    doc = all_documents()[gv]
    assert kubectl_finds_field_validation(doc, group, "v1", kind)


def test_patch_body_content_types() -> None:
    """PATCH takes JSON, merge and apply patches; strategic merge is not advertised (see module)."""
    doc = all_documents()["v1"]
    for _, op in patch_operations(doc):
        assert set(op["requestBody"]["content"]) == {
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        }


def test_paths_cover_collection_item_and_subresources() -> None:
    """Namespaced and cluster-scoped kinds get their collection, item and subresource paths."""
    paths = all_documents()["v1"]["paths"]
    pod_item = paths["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert {"get", "put", "patch", "delete"} <= pod_item.keys()
    assert {"get", "post", "delete"} <= paths["/api/v1/namespaces/{namespace}/pods"].keys()
    assert "get" in paths["/api/v1/pods"]
    assert "patch" in paths["/api/v1/namespaces/{namespace}/pods/{name}/status"]
    assert set(paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]) == {"get", "parameters"}
    assert "patch" in paths["/api/v1/nodes/{name}"]
    crd_paths = all_documents()[f"{GROUP}/v1"]["paths"]
    scale = crd_paths[f"/apis/{GROUP}/v1/namespaces/{{namespace}}/widgets/{{name}}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Scale"


def test_every_schema_reference_resolves_and_ids_are_unique() -> None:
    """Each $ref names a schema in components, and no operationId repeats."""
    for gv, doc in all_documents().items():
        schemas = doc["components"]["schemas"]
        refs: list[str] = []
        collect_refs(doc, refs)
        assert refs, gv
        for ref in refs:
            assert ref.removeprefix("#/components/schemas/") in schemas, (gv, ref)
        ids = [op["operationId"] for item in doc["paths"].values() for op in operations(item)]
        assert len(ids) == len(set(ids)), gv


def collect_refs(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                out.append(value)
            else:
                collect_refs(value, out)
    elif isinstance(node, list):
        for value in node:
            collect_refs(value, out)


def operations(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in item.items() if k in {"get", "put", "post", "patch", "delete"}]


def test_schemas_are_permissive_and_tagged_with_their_kind() -> None:
    """Built-in kinds accept any field; a CRD keeps its schema plus apiVersion, kind, metadata."""
    docs = all_documents()
    pod = docs["v1"]["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-preserve-unknown-fields"] is True
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "Pod"}]
    widget = docs[f"{GROUP}/v1"]["components"]["schemas"]["io.kubeedge.example.v1.Widget"]
    assert widget["x-kubernetes-group-version-kind"] == [
        {"group": GROUP, "version": "v1", "kind": "Widget"}
    ]
    assert widget["properties"]["spec"]["properties"]["size"] == {"type": "integer"}
    assert {"apiVersion", "kind", "metadata", "spec"} <= widget["properties"].keys()
    assert "io.k8s.api.autoscaling.v1.Scale" in docs[f"{GROUP}/v1"]["components"]["schemas"]


def test_crd_schema_is_not_modified_in_place() -> None:
    """Building a document leaves the CRD's own schema dict untouched."""
    [info] = [i for i in from_crd(WIDGET_CRD) if i.version == "v1"]
    assert info.schema is not None
    before = repr(info.schema)
    openapi.openapi_v3_document([info], f"{GROUP}/v1")
    assert repr(info.schema) == before


def test_unknown_group_version_has_no_document() -> None:
    """openapi_v3_document returns None for a group version nothing is served at."""
    assert openapi.openapi_v3_document(all_infos(), "nope.example/v1") is None
    assert openapi.openapi_v3_document(all_infos(), "v2") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("api/v1", "v1", id="core"),
        pytest.param("apis/apps/v1", "apps/v1", id="group"),
        pytest.param("/apis/apps/v1/", "apps/v1", id="slashes"),
        pytest.param("apis/apps", None, id="no-version"),
        pytest.param("version", None, id="other"),
    ],
)
def test_group_version_of_index_path(path: str, expected: str | None) -> None:
    """Index keys map back to group versions, and index_path inverts it."""
    assert openapi.group_version_of(path) == expected
    if expected is not None:
        assert openapi.index_path(expected) == path.strip("/")
