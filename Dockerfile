# memesearch for a Linux host with an NVIDIA GPU (run with `--gpus all`); also runs on CPU.
# PyPI's torch wheels bring their own CUDA libraries, so a slim Python base is enough: the host
# only needs the NVIDIA driver and the NVIDIA container toolkit.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models \
    MEMESEARCH_CONFIG=/etc/memesearch/config.toml \
    MEMESEARCH_LIBRARY__PATH=/memes \
    MEMESEARCH_DATABASE__URL=sqlite:////data/memesearch.db

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
# /memes: the library (read-only is fine); /data: database; /models: Hugging Face model cache.
VOLUME ["/data", "/models"]
ENTRYPOINT ["memesearch"]
CMD ["index"]
