# CDS backend image (build context: the repository root; see compose.yaml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
# The backend needs only the shared wire contracts and itself; the gateway, simulator and dev stack stay out.
COPY protocol protocol
COPY backend backend
RUN pip install --no-cache-dir ".[backend]" && useradd --system --uid 10001 cds
USER cds
EXPOSE 8000
ENV BACKEND_HOST=0.0.0.0
CMD ["python", "-m", "backend"]
