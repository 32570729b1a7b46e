# memesearch for a Linux host with an NVIDIA GPU (docker run --gpus all …); also runs on CPU.
# PyPI's torch wheels bring their own CUDA libraries, so a slim Python base is enough: the host
# needs only the NVIDIA driver and the NVIDIA container toolkit.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models \
    MEMESEARCH_CONFIG=/etc/memesearch/config.toml \
    MEMESEARCH_LIBRARY__PATH=/memes \
    MEMESEARCH_DATABASE__URL=sqlite:////data/memesearch.db \
    MEMESEARCH_THUMBNAILS__FOLDER=/data/thumbnails \
    MEMESEARCH_SERVER__HOST=0.0.0.0 \
    MEMESEARCH_SERVER__PORT=8000

RUN useradd --create-home --uid 1000 memesearch \
    && mkdir -p /memes /data /models /etc/memesearch \
    && chown memesearch:memesearch /data /models

WORKDIR /opt/memesearch
COPY pyproject.toml README.md ./
COPY src ./src
COPY alembic ./alembic
COPY templates ./templates
COPY static ./static
# faiss-gpu-cu12 replaces faiss-cpu (same `faiss` module) so searches can run on the GPU too.
RUN pip install . && pip uninstall -y faiss-cpu && pip install faiss-gpu-cu12
COPY config.toml /etc/memesearch/config.toml

USER memesearch
# /memes: the library (read-only is fine); /data: database, thumbnails, upload cache;
# /models: the Hugging Face model cache (keep it, the default model is ~3.5 GB).
VOLUME ["/data", "/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["memesearch"]
CMD ["serve"]
