# The prodline worker (and CLI) image used by docker-compose.yml.
# Stage one builds the wheel from the repository (what goes in is what pyproject's
# package discovery finds: no list of folders to keep here); stage two installs it.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels && useradd --create-home prodline
USER prodline
ENTRYPOINT []
CMD ["prodline", "worker"]
