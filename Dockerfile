# Image for docker-compose's workers: the package and the example topology.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY topology topology
COPY schemas schemas
RUN pip install --no-cache-dir .
ENV STREAMS_SCHEMAS_DIR=/app/schemas
