# The controller image: gitsync with the Kubernetes and Tencent Cloud backends.
# Matches manifests/deployment.yaml: non-root user 65532, read-only root file system,
# state in the /var/lib/gitsync volume.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gitsync ./gitsync
RUN pip install --no-cache-dir '.[tencent,zstd]' && rm -rf /src
WORKDIR /
USER 65532:65532
EXPOSE 9108
ENTRYPOINT ["gitsync"]
CMD ["run", "--config", "/etc/gitsync/config.yaml"]
