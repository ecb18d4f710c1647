# The controller image: gitsync with the Kubernetes and Tencent Cloud backends.
# Matches manifests/deployment.yaml: non-root user 65532, read-only root file system,
# state in the /var/lib/gitsync volume.
#
# Python packages come from requirements/image.lock: exact versions with their hashes, for
# the extras the image uses (tencent, zstd) and the build backend, so two builds of one
# commit get the same packages; gitsync itself is then installed without resolving anything.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/image.lock ./requirements/image.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY gitsync ./gitsync
# pip check fails the build when pyproject.toml needs something the lock does not pin.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check && rm -rf /src
WORKDIR /
USER 65532:65532
EXPOSE 9108
ENTRYPOINT ["gitsync"]
CMD ["run", "--config", "/etc/gitsync/config.yaml"]
