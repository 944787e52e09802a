# One image for every clip-serve process: the model export, Triton (through the launcher), the
# gateway, or all of them at once (`python -m serve`, the default command). Triton itself comes
# from the nvidia-pytriton wheel, so any Debian-based Python 3.11 image can be the base.
#
#   docker build -t clip-serve .                                          # CPU (torch's CPU build)
#   docker build -t clip-serve-gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# BASE_IMAGE must provide python3.11 on Debian bookworm; the build stage and the final stage use
# the same one, because the virtual environment points at its interpreter.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# torch's CPU build by default (a CUDA build is several GB more). Empty: whatever pip's own
# configuration finds (a local wheel folder, say).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3.11 -m venv /opt/venv
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"
COPY requirements.txt /src/requirements.txt
RUN pip install -r /src/requirements.txt
COPY proto /src/proto
COPY client /src/client
RUN pip install /src/proto /src/client && rm -rf /src

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="clip-serve" \
      org.opencontainers.image.description="CLIP ViT-B/16 zero-shot classification and embeddings on Triton, behind a gRPC and OpenAI-compatible HTTP gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/clip-serve/clip-serve"
# Triton's Python-backend stub links libpython3.11.so.1.0. The official python image has its own;
# a plain Debian base gets Debian's.
RUN python3.11 -c 'import pathlib, sys, sysconfig; name = sysconfig.get_config_var("INSTSONAME"); sys.exit(not (name and (pathlib.Path(sysconfig.get_config_var("LIBDIR")) / name).is_file()))' \
 || (apt-get update && apt-get install -y --no-install-recommends libpython3.11 && rm -rf /var/lib/apt/lists/*)
# The exporter (serve, or the Kubernetes init container) compiles the encoders with AOTInductor when
# a C++ compiler is present; serving never uses it. EXPORT_COMPILER= (empty) builds an image without
# one (1.69 GB against 2.12): its exports are TorchScript, slower on CPU (docs/benchmarks.md), and say so.
ARG EXPORT_COMPILER=g++
RUN if [ -n "${EXPORT_COMPILER}" ]; then apt-get update && apt-get install -y --no-install-recommends ${EXPORT_COMPILER} \
      && rm -rf /var/lib/apt/lists/*; fi
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/clip clip \
 && install -d -o clip -g clip /var/lib/clip-serve /home/clip/.cache/huggingface
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# What runs, nothing else: no tests, benchmarks or docs (the compiler above is the exporter's).
COPY configuration /app/configuration
COPY gateway /app/gateway
COPY launcher /app/launcher
COPY export /app/export
COPY serve /app/serve
COPY model_repository /app/model_repository
COPY models /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/clip/.cache/huggingface \
    CLIP_SERVE_TRITON_DIR=/opt/triton \
    CLIP_GATEWAY_LISTEN=0.0.0.0:50051 \
    CLIP_GATEWAY_METRICS_LISTEN=127.0.0.1:9464 \
    CLIP_GATEWAY_HTTP_LISTEN=0.0.0.0:8080
# Triton's Python backend for this interpreter, prepared now rather than at every start.
# (pip byte-compiled the venv; /app is compiled here, as the root filesystem may be read-only later.)
RUN python -c 'from pathlib import Path; from launcher.runtime import locate; locate(Path("/opt/triton"))' \
 && python -m compileall -q /app
USER clip
EXPOSE 50051 8080
# The default command's health: the gateway's grpc.health.v1, which follows Triton's model
# readiness. (The compose file gives the Triton-only service a check of its own.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "-m", "gateway.healthcheck", "localhost:50051"]
# Export (or reuse) the model into /var/lib/clip-serve/repository (the exporter writes beside it and
# swaps it in, so mount a volume at /var/lib/clip-serve, not at the repository), start Triton and the gateway. Every CLIP_GATEWAY_*
# variable applies (API keys, limits, TLS, image URLs); CLIP_GATEWAY_API_KEYS_FILE names a mounted file.
CMD ["python", "-m", "serve", "--repository", "/var/lib/clip-serve/repository", "--triton-log", "/tmp/triton.log"]
