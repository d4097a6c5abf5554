# The prodline worker (and CLI) image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY activities activities
COPY workflows workflows
COPY workers workers
COPY cli cli
RUN pip install --no-cache-dir . && useradd --create-home prodline
USER prodline
ENTRYPOINT []
CMD ["prodline", "worker"]
