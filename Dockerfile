# syntax=docker/dockerfile:1
# ordermail container image: `docker build -t ordermail:0.1.0 .`
#
# Two stages on the same Debian bookworm Python base, so the virtualenv built in the first stage
# runs unchanged in the second (same /usr/local/bin/python3.11):
#   builder - downloads the dependencies at exactly the versions the tests ran with, from
#             requirements/lock.txt with --require-hashes (sha256 of every file; `make lock`
#             writes it; binary wheels on PyPI for all but dkimpy: confluent-kafka, pikepdf, cffi,
#             pydantic-core, fastavro...), builds ordermail's wheel with the hash-checked pip and
#             setuptools of requirements/build-lock.txt (virtualenv /opt/build), and installs all of
#             it, --no-deps, into /opt/ordermail, a virtualenv without pip or setuptools;
#   runtime - the slim base, the Debian libraries WeasyPrint loads at run time, the virtualenv,
#             a fixed non-root user. No compiler, no pip cache, no apt lists.
# The image runs with a read-only root filesystem: it never writes outside /tmp (an emptyDir in
# Kubernetes), bytecode is compiled at build time, fontconfig's cache is built at build time.
# deploy/k8s/README.md says what is validated offline and what is not (this build: no Docker
# engine on the development machines).

# Policy-scan exception (checkov, deploy/k8s/validate):
# checkov:skip=CKV_DOCKER_2:no HEALTHCHECK - Kubernetes probes /healthz and /readyz (deploy/k8s)

# The base is pinned to a CPython patch release, not the moving 3.11 tag: 3.11.10 and later fix
# CVE-2024-6923 (e-mail header injection: the email module did not quote newlines in headers it
# serialises, and this service builds and sends e-mail). Both stages use the same tag, so the
# virtualenv's /usr/local/bin/python3.11 and /usr/local/lib/python3.11 paths stay valid.
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PREFER_BINARY=1
WORKDIR /src
# The dependencies first, so a change to the sources alone reuses this layer. pip refuses any
# file whose sha256 is not in the lock and any dependency the lock does not pin; the one sdist
# (dkimpy) is built with the pinned setuptools of /opt/build (--no-build-isolation), not with
# whatever setuptools PyPI serves that day. /opt/build's pip then installs the checked wheels
# into /opt/ordermail, which gets neither pip nor setuptools (--python).
COPY requirements/lock.txt requirements/build-lock.txt ./requirements/
RUN python -m venv /opt/build \
 && /opt/build/bin/python -m pip install --require-hashes -r requirements/build-lock.txt \
 && /opt/build/bin/pip wheel --require-hashes --no-build-isolation --wheel-dir /wheels \
      -r requirements/lock.txt \
 && python -m venv --without-pip /opt/ordermail \
 && /opt/build/bin/pip --python /opt/ordermail/bin/python install --no-index --no-deps /wheels/*.whl
# Only what the wheel needs (see .dockerignore): pyproject.toml names README.md as the readme.
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
COPY rendering ./rendering
COPY delivery ./delivery
# The translations' .po files compiled to .mo (not in git), inside the wheel's package data.
RUN /opt/ordermail/bin/pybabel compile --statistics -D messages -d rendering/templates/shared/locale \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && /opt/build/bin/pip --python /opt/ordermail/bin/python install --no-index --no-deps /dist/*.whl \
 && /opt/ordermail/bin/python -m compileall -q /opt/ordermail

FROM python:3.11.14-slim-bookworm AS runtime
# Runtime Debian packages: the runtime part of deploy/local/system-deps (tests/deploy checks that
# the two lists agree). Without libharfbuzz-subset0 WeasyPrint silently renders ~5x slower; the
# service warns at start-up. Noto draws the scripts DejaVu lacks (Arabic, Hebrew, Devanagari,
# Thai, CJK; the serif CJK faces are never used and removed). fontconfig adds fc-match (rendering/fonts.py uses it) and lets us
# build the font cache here, since the root filesystem is read-only at run time.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpango-1.0-0 \
      libpangoft2-1.0-0 \
      libharfbuzz-subset0 \
      fonts-dejavu-core \
      fonts-noto-core \
      fonts-noto-cjk \
      fonts-noto-color-emoji \
      fontconfig \
 && rm -rf /var/lib/apt/lists/* /usr/share/fonts/opentype/noto/NotoSerifCJK* \
 && fc-cache -f \
 && python -m compileall -q /usr/local/lib/python3.11 \
 && groupadd --system --gid 10001 ordermail \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin ordermail

COPY --from=builder /opt/ordermail /opt/ordermail
# The Typst engine's CJK faces, cut from the collection installed above (rendering/cjk_faces.py:
# ~6.5 MB a face where Typst would read ~20 MB; built here, the root filesystem being read-only).
RUN /opt/ordermail/bin/python -m rendering.cjk_faces

ENV PATH=/opt/ordermail/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache

LABEL org.opencontainers.image.title="ordermail" \
      org.opencontainers.image.description="Kafka consumer group e-mailing each completed order as an encrypted PDF receipt"

# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# Probes (/healthz, /readyz) and Prometheus metrics (/metrics): ORDERMAIL_HEALTH_PORT.
EXPOSE 8080
# No init process: Python is PID 1 and installs its own SIGTERM/SIGINT handlers (drain, commit,
# close); it waits for its render workers itself, so no zombies accumulate. `tini -g` would be
# harmful here: it would also signal the render workers and cut in-flight renders short.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ordermail"]
CMD ["run"]
