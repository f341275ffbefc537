# CDS backend image (build context: the repository root; see compose.yaml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY backend backend
COPY sim sim
RUN pip install --no-cache-dir . && useradd --system --uid 10001 cds
USER cds
EXPOSE 8000
ENV BACKEND_HOST=0.0.0.0
CMD ["python", "-m", "backend"]
