# syntax=docker/dockerfile:1
# Triton Inference Server (NGC 24.10 = Triton 2.51, the version the tests run) with the
# SynthGuard model repository baked in: the image tag is the model release.
#
# The python-backend shims import `serving`, which needs Python 3.11; the NGC image's
# stub is built for its Python 3.10. So, as `serving.triton.server` does on the build
# machines: a Python 3.11 venv (numpy < 2, faiss-cpu, synthguard) first on PATH and
# the Python 3.11 stub from the nvidia-pytriton wheel (same Triton 2.51 backend API).
# Not built here (no Docker engine on the build machines); see README "Deploy".
#
# 1. Export the repository with `serving` resolved from site-packages:
#      synthguard export --out build/model_repository --no-source-path \
#        --feedback-bank /var/lib/synthguard/feedback-bank \
#        --gpu-onnx vit-l14-image.onnx      # prod: ViT-L/14 fp32 ONNX (configs/gpu.pbtxt)
# 2. docker build -f deploy/docker/triton.Dockerfile -t synthguard-triton:0.1.0 .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python
RUN python3 -m pip install "uv==0.9.*" \
 && uv python install 3.11 \
 && uv venv --python 3.11 /opt/venv
COPY requirements-triton.txt /opt/synthguard/
RUN uv pip install --python /opt/venv/bin/python -r /opt/synthguard/requirements-triton.txt \
 && uv pip install --python /opt/venv/bin/python --no-deps "nvidia-pytriton==0.7.0" \
 && cp /opt/venv/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
       /opt/tritonserver/backends/python/triton_python_backend_stub \
 && uv pip uninstall --python /opt/venv/bin/python nvidia-pytriton
COPY pyproject.toml README.md /opt/synthguard/src/
COPY serving /opt/synthguard/src/serving
COPY stream /opt/synthguard/src/stream
RUN uv pip install --python /opt/venv/bin/python --no-deps /opt/synthguard/src \
 && rm -rf /opt/synthguard/src
COPY --chown=1000:1000 build/model_repository /models
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/python/cpython-3.11-linux-x86_64-gnu/lib:$LD_LIBRARY_PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# the NGC image's unprivileged user
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--strict-readiness=true", "--exit-on-error=true"]
