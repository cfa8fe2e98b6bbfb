# syntax=docker/dockerfile:1
# genmedia services: one image for the gateway and the three model services
# (no torch), the process chosen by its argument; and, as target `loadtest`,
# the locust image the Kubernetes load-test job runs. From the repository root:
#
#   docker build -f deploy/docker/services.Dockerfile -t genmedia/services:0.1.0 .
#   docker run --rm -p 50051:50051 genmedia/services:0.1.0 gateway
#   docker build -f deploy/docker/services.Dockerfile --target loadtest -t genmedia/loadtest:0.1.0 .
#
# Kubernetes ignores HEALTHCHECK and probes gRPC health natively; compose sets
# `genmedia-serve healthcheck <process>` per service, since one image runs four.
# checkov:skip=CKV_DOCKER_2:one image runs four processes on four ports; compose and Kubernetes each set the health check of the process they run

# 1. The gRPC code generated from protos/ (built, never committed).
FROM python:3.11.14-slim-bookworm AS protos
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install grpcio-tools==1.81.1
COPY protos/ protos/
RUN python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. \
    protos/genmedia/v1/*.proto

# 2. A virtual environment with the pinned dependencies, then the code:
#    dependency layers stay cached while only the code changes.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/services.txt requirements/services.txt
RUN pip install -r requirements/services.txt
COPY pyproject.toml ./
COPY genmedia_shared/ genmedia_shared/
COPY services/ services/
COPY --from=protos /src/genmedia/ genmedia/
RUN pip install --no-deps . && genmedia-serve --help >/dev/null

# 3. The runtime: the environment only, a non-root user, no build tools.
FROM python:3.11.14-slim-bookworm AS services
LABEL org.opencontainers.image.title="genmedia-services" \
      org.opencontainers.image.description="genmedia gateway and model services (gRPC, no torch)" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 genmedia \
    && useradd --system --uid 10001 --gid genmedia --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin genmedia
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# gRPC: gateway, image-generation, image-translation, text-generation; then their metrics.
EXPOSE 50051 50052 50053 50054 9101 9102 9103 9104 8080
ENTRYPOINT ["genmedia-serve"]
CMD ["--help"]

# 4. Load generator: locust and the locustfile on top of the same environment.
FROM build AS loadtest-build
COPY requirements/load.txt requirements/load.txt
RUN pip install -r requirements/load.txt

FROM python:3.11.14-slim-bookworm AS loadtest
LABEL org.opencontainers.image.title="genmedia-loadtest" \
      org.opencontainers.image.description="locust users that call genmedia through its gateway" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 genmedia \
    && useradd --system --uid 10001 --gid genmedia --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin genmedia
COPY --from=loadtest-build /opt/venv /opt/venv
WORKDIR /opt/genmedia
COPY tools/__init__.py tools/runner_settings.py tools/
COPY tools/load/ tools/load/
USER 10001:10001
# locust's web UI, and the port its workers connect to on the master.
EXPOSE 8089 5557
ENTRYPOINT ["locust", "-f", "tools/load/locustfile.py"]
CMD ["--help"]
