# One image for every clip-serve process (export, Triton via the launcher, gateway): the same
# launcher and model repository as local runs. Triton comes from the nvidia-pytriton wheel.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, on its own: the default is the PyPI build; pass e.g. a CPU-only index with
# --build-arg PIP_EXTRA_INDEX_URL=... for a smaller image.
ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir "${TORCH_SPEC}"
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir ./client

ENV PYTHONUNBUFFERED=1
EXPOSE 50051 9464 8001 8002
CMD ["python", "-m", "serve", "--host", "0.0.0.0"]
