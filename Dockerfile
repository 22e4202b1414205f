# One image for every Estuary process: web (daphne), the control plane's Celery worker, agents.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ESTUARY_DATA_DIR=/data

WORKDIR /app

# Dependencies first, so code changes do not reinstall them. torch comes from PyTorch's CPU
# index (PyPI's default Linux wheel pulls several GB of CUDA libraries).
COPY requirements.txt .
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements.txt

RUN useradd --create-home --uid 1000 estuary \
    && mkdir -p /data /state /shared \
    && chown estuary:estuary /data /state /shared
COPY --chown=estuary:estuary . .
USER estuary

EXPOSE 8000
CMD ["python", "-m", "controlplane.serve", "--host", "0.0.0.0", "--port", "8000"]
