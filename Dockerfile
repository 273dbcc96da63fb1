# One container: chittyos serving Streamable HTTP on /mcp, /health for the orchestrator.
#   docker build -t chittyos .
#   docker run -p 8765:8765 -e CHITTY_API_TOKENS=... -e OPENAI_API_KEY=... -v chitty-data:/data chittyos
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends gnupg bubblewrap \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin chitty \
 && mkdir -p /data && chown chitty:chitty /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER chitty
ENV CHITTY_DATA_DIR=/data \
    CHITTY_HTTP_PORT=8765 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8765

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import json,sys,urllib.request; r=urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=4); sys.exit(0 if json.load(r).get('status')=='ok' else 1)"

# Binding 0.0.0.0 needs CHITTY_API_TOKENS: without a token the server refuses to start.
CMD ["chittyos", "serve", "--http", "--host", "0.0.0.0"]
