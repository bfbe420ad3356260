# One image for every a4co service: `python -m services.<name>` picks the service.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app:/app/gen/python
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY proto ./proto
COPY gen ./gen
COPY services ./services
ENV A4CO_GRPC_ADDRESS=0.0.0.0:50051 A4CO_METRICS_PORT=9100 A4CO_METRICS_ADDR=0.0.0.0
EXPOSE 50051 9100
USER nobody
