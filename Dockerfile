# The ratekeeper rating server: what serving needs and nothing else (docs/deploy.md).
#
#   podman build --format docker -t ratekeeper .      # or: docker build -t ratekeeper .
#   docker run -p 8000:8000 -e RATEKEEPER_REGISTRY_URI=postgresql+psycopg://... ratekeeper
#
# A registered model is priced with onnxruntime and numpy alone: no scikit-learn, LightGBM or
# XGBoost here (models are trained and registered elsewhere). Dependencies are the pinned,
# hash-checked requirements/serve.txt. Where no public image registry is reachable, build a
# local base with scripts/base-image.sh and pass it as BASE_IMAGE; where pip needs a company
# CA, mount it and pass PIP_CERT (`-v /etc/ssl/certs/ca-certificates.crt:/run/ca.crt:ro
# --build-arg PIP_CERT=/run/ca.crt`).
ARG BASE_IMAGE=python:3.11-slim

# -- build: a virtual environment with ratekeeper and its serving dependencies ---------------
FROM ${BASE_IMAGE} AS build
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /build
# binutils (strip, for slim-venv.sh) lives in this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/ratekeeper
COPY requirements/serve.txt requirements/serve.txt
RUN /opt/ratekeeper/bin/pip install --no-cache-dir --require-hashes --no-deps \
        -r requirements/serve.txt
COPY pyproject.toml README.md LICENSE ./
COPY src src
RUN /opt/ratekeeper/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /build/dist . \
    && /opt/ratekeeper/bin/pip install --no-cache-dir --no-deps /build/dist/ratekeeper-*.whl
# Trimmed of what a rating server never loads (the script says what and how much, measured).
COPY deploy/image/slim-venv.sh /build/slim-venv.sh
RUN sh /build/slim-venv.sh /opt/ratekeeper

# -- runtime: the virtual environment on a slim base, as a user with no rights --------------
FROM ${BASE_IMAGE}
ARG UID=10001
RUN useradd --system --uid "${UID}" --user-group --no-create-home \
        --home-dir /var/lib/ratekeeper --shell /usr/sbin/nologin ratekeeper \
    && mkdir -p /var/lib/ratekeeper/ledger \
    && chown -R ratekeeper:ratekeeper /var/lib/ratekeeper \
    && chmod -R 0700 /var/lib/ratekeeper
COPY --from=build /opt/ratekeeper /opt/ratekeeper
# Settings come from the environment (docs/settings.md): RATEKEEPER_REGISTRY_URI,
# RATEKEEPER_ARTIFACTS, RATEKEEPER_AUDIT_KEY_FILE, RATEKEEPER_WORKERS, ... The embedded default
# (a registry folder in RATEKEEPER_HOME) is for trying the image out; mount a volume there. The
# ledger folder exists so that a new named volume mounted on it belongs to the server's user.
ENV PATH=/opt/ratekeeper/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RATEKEEPER_HOME=/var/lib/ratekeeper \
    RATEKEEPER_USER=ratekeeper
WORKDIR /var/lib/ratekeeper
USER ${UID}:${UID}
EXPOSE 8000
# Liveness on loopback, with the Python already here (no curl). With TLS on, set
# RATEKEEPER_HEALTH_URL=https://127.0.0.1:8000/healthz: the check talks to this very process, so
# it does not verify the certificate (which names the service, not 127.0.0.1).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, urllib.request as r; r.urlopen(os.environ.get('RATEKEEPER_HEALTH_URL', 'http://127.0.0.1:8000/healthz'), timeout=2, context=ssl._create_unverified_context())"]
ENTRYPOINT ["ratekeeper"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
