# loraplane CPU image: the control plane, the gateway and the demo worker on CPU (one image, three
# commands; compose.yaml and deploy/kubernetes run it).    docker build -t loraplane:cpu .
# The CUDA worker image is Dockerfile.cuda.
FROM python:3.11-slim-bookworm

# g++ builds the CPU ops: below, and at the first start on a host whose CPU the builder did not have.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin loraplane

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LORAPLANE_CACHE=/var/cache/loraplane \
    TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /opt/loraplane
# What the wheel is built from (pyproject.toml's package-dir folders, the protos setup.py ships).
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY scripts scripts
COPY protos protos
COPY loraplane loraplane
COPY control_plane control_plane
COPY gateway gateway
COPY inference_worker inference_worker
COPY kernels kernels
# Exactly what CI installs (without the test tools): CPU torch first, then loraplane, then the demo
# model's package without its dependencies.
RUN bash scripts/install.sh --image
# The CPU ops and the converted demo model, built into the image; then owned by the user that runs.
RUN python -P scripts/warm_cache.py \
    && mkdir -p /data /cache /adapters \
    && chown -R loraplane:loraplane "$LORAPLANE_CACHE" /data /cache

USER 1000:1000
CMD ["loraplane", "--help"]
