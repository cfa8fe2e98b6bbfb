# syntax=docker/dockerfile:1
# genmedia's Triton: NVIDIA's Triton container in the flavour that carries the
# PyTorch and Python backends, plus the model repository sources, the model
# code it imports, the pinned Python packages of that code and the demo pack.
# From the repository root:
#
#   docker build -f deploy/docker/triton.Dockerfile -t genmedia/triton:0.1.0 .
#
# The served repository is built at start-up from the weights that are there
# (`python3 -m services.launcher.repository`: the Kubernetes init step runs
# it, and so does this image's default command, which compose uses); see
# deploy/README.md.
FROM nvcr.io/nvidia/tritonserver:26.06-pyt-python-py3

LABEL org.opencontainers.image.title="genmedia-triton" \
      org.opencontainers.image.description="Triton Inference Server with genmedia's BigGAN, CycleGAN and GPT-2 models" \
      org.opencontainers.image.version="0.1.0"

# The python backend runs the system interpreter: the model code's packages
# go there. Weights are read from a mounted path, never downloaded, so the
# Hugging Face libraries are told to stay offline.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HOME=/tmp GENMEDIA_WEIGHTS_DIR=/opt/genmedia/models/demo
COPY requirements/triton.txt /opt/genmedia/requirements/triton.txt
RUN pip install -r /opt/genmedia/requirements/triton.txt

# The model code, installed as a package with the torch-free code it shares with
# the services: every model.py imports it like any other package. The repository
# builder (standard library only) finds its sources beside services/.
COPY models/pyproject.toml /opt/genmedia/models/pyproject.toml
COPY models/genmedia_models/ /opt/genmedia/models/genmedia_models/
COPY genmedia_shared/ /opt/genmedia/models/genmedia_shared/
RUN pip install --no-deps /opt/genmedia/models
COPY models/repository/ /opt/genmedia/models/repository/
COPY models/demo/ /opt/genmedia/models/demo/
COPY services/__init__.py /opt/genmedia/services/__init__.py
COPY services/launcher/__init__.py services/launcher/repository.py /opt/genmedia/services/launcher/
WORKDIR /opt/genmedia

# Any unprivileged uid works: the image's files are world-readable and HOME is /tmp.
USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://localhost:8000/v2/health/ready', timeout=4)"]
CMD ["sh", "-c", "python3 -m services.launcher.repository --weights \"$GENMEDIA_WEIGHTS_DIR\" --out /tmp/genmedia/repository && exec tritonserver --model-repository=/tmp/genmedia/repository --disable-auto-complete-config --model-control-mode=none --strict-readiness=true --exit-on-error=true"]
