"""Render the Kubernetes edge's Envoy config into base/edge/ from gateway/envoy/edge.yaml.tmpl.

Writes base/edge/envoy.yaml (the template rendered with the in-cluster Service names) and a copy of the
descriptor set its gRPC-JSON transcoder reads (kustomize only reads files under its own folder). With
--check it writes nothing and exits 1 when either file differs from what it would write; tests/deploy
runs that, so the committed config never drifts from the template.

python -P deploy/kubernetes/render_edge.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loraplane.gateway.envoy_config import DESCRIPTOR_SET, EdgeConfig, render_edge_config

EDGE_DIR = Path(__file__).resolve().parent / "base" / "edge"
# Service names and ports of base/*.yaml; the edge pod mounts its ConfigMap at /etc/envoy.
KUBERNETES_EDGE = EdgeConfig(
    gateways=[("loraplane-gateway", 8001)],
    workers=[("loraplane-worker", 50061)],
    control_planes=[("loraplane-control-plane", 50051)],
    listen_port=8000,
    admin_port=9901,
    descriptor="/etc/envoy/loraplane_api.pb",
)


def rendered() -> dict[Path, bytes]:
    """The files render_edge writes, by path."""
    return {
        EDGE_DIR / "envoy.yaml": render_edge_config(KUBERNETES_EDGE).encode(),
        EDGE_DIR / DESCRIPTOR_SET.name: DESCRIPTOR_SET.read_bytes(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    args = parser.parse_args()
    stale = [path for path, data in rendered().items() if not path.is_file() or path.read_bytes() != data]
    if args.check:
        for path in stale:
            print(f"stale: {path} (run python -P deploy/kubernetes/render_edge.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, data in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
