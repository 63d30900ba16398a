# syntax=docker/dockerfile:1
# The producer image: the backup_archive Django app (producer/) and its event codec (schemas/python) in a minimal
# Django project (deploy/docker/producer/fusion_site), to run migrations and `manage.py backup_scheduler`.
#
#   docker build -f deploy/docker/producer.Dockerfile -t fusion-backup-producer .     # from the repository root
#   docker run --rm -e PGHOST=... -e FUSION_BACKUP_BROKERS=... fusion-backup-producer migrate
#
# In production Fusion's own image installs the app instead (producer/README.md); this one serves docker-compose.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# producer/fusion_events is a symlink into schemas/python: the app's wheel bundles the codec from there.
COPY schemas/python/ schemas/python/
COPY producer/ producer/
# Wheels of the app (with the codec) and every dependency (confluent-kafka and psycopg2-binary ship manylinux
# wheels, so no compiler is needed); the runtime stage installs from this folder only. psycopg2 is the
# project's driver, not the app's dependency: this image's project asks for it.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./producer psycopg2-binary

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=fusion_site.settings
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels fusion-backup-archive psycopg2-binary \
 && rm -rf /wheels \
 && groupadd --system --gid 10002 fusion-producer \
 && useradd --system --uid 10002 --gid fusion-producer --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fusion-producer
WORKDIR /app
COPY deploy/docker/producer/ /app/
USER 10002:10002
# backup_scheduler stops after the current tick on SIGTERM (and a standby takes over through the advisory lock).
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "/app/manage.py"]
CMD ["backup_scheduler"]
