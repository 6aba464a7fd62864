# The image of every Tributary service in docker-compose.yml (worker, topics, world,
# train, replay, alerts, replay-test): one image, the `tributary` command as entry point.
#
# CPU torch by default. TORCH_VARIANT=cuda installs the same torch version from PyPI,
# whose Linux x86_64 wheel is the CUDA build (it brings its CUDA libraries as pip
# packages; the host needs an NVIDIA driver and the NVIDIA container toolkit):
#   docker compose -f docker-compose.yml -f docker-compose.gpu.yml up --build
FROM python:3.11.13-slim-bookworm

ARG TORCH_VARIANT=cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# LightGBM's wheel links against the system OpenMP runtime; slim images lack it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, from the index of the chosen variant, at the version constraints.txt pins:
# a plain `pip install` would pull PyPI's multi-GB CUDA build into the CPU image.
COPY constraints.txt pyproject.toml README.md ./
RUN set -eu; \
    version="$(sed -n 's/^torch==//p' constraints.txt)"; \
    case "$TORCH_VARIANT" in \
      cpu)  pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu \
                --extra-index-url https://pypi.org/simple "torch==${version}+cpu" ;; \
      cuda) pip install -c constraints.txt "torch==${version}" ;; \
      *)    echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 1 ;; \
    esac

# Then the dependencies alone (a layer that survives code changes), then the code.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY models ./models
COPY offline ./offline
COPY stream ./stream
COPY tributary ./tributary
COPY deploy/docker ./deploy/docker
RUN pip install -c constraints.txt --no-deps . \
    && tributary --version

# A fixed non-root user; the data directories exist in the image so that named volumes
# mounted on them start out owned by that user.
RUN useradd --create-home --uid 10001 tributary \
    && mkdir -p /data/worlds /data/models /data/alerts /data/graph \
    && chown -R tributary:tributary /data
USER tributary
WORKDIR /data
# Numba caches compiled kernels next to their source by default; site-packages is not
# writable by this user, so keep the cache in its home instead.
ENV NUMBA_CACHE_DIR=/home/tributary/.cache/numba

ENTRYPOINT ["tributary"]
CMD ["--help"]
