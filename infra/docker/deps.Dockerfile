# NATS and Redis from Debian packages, for hosts that cannot pull the official `nats` and `redis`
# images (tools/compose-up.sh builds them on the local base image). Context: infra/docker.
#   podman build -f infra/docker/deps.Dockerfile --target nats -t kappa-nats infra/docker
ARG BASE=node:24-bookworm-slim

FROM ${BASE} AS nats
RUN apt-get update && apt-get install -y --no-install-recommends nats-server \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown 1000 /data
USER 1000
# Same interface as the official image: arguments go to nats-server.
ENTRYPOINT ["nats-server"]

FROM ${BASE} AS redis
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown 1000 /data
USER 1000
WORKDIR /data
CMD ["redis-server"]
