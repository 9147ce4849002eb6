# The trickscope server: no torch, one process, configured through TRICKSCOPE_* variables.
# It listens on all interfaces, so it refuses to start without a token:
#   docker run -e TRICKSCOPE_TOKEN="$(openssl rand -hex 32)" -p 8000:8000 IMAGE
# (docker-compose.yml reads the token from .env instead; see .env.example).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent agent
COPY server server
COPY web web
RUN pip install --no-cache-dir '.[postgres]' && useradd --create-home trickscope
USER trickscope
ENV TRICKSCOPE_HOST=0.0.0.0 TRICKSCOPE_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["trickscope", "serve"]
