"""Triton shim: the CLIP text tower (logic in serving.triton.backend.TextEncoderBackend)."""

import json
import sys

import triton_python_backend_utils as pb_utils


def import_backend(args):
    """Put the exporter's source path first (if any), then import the backend."""
    params = json.loads(args["model_config"]).get("parameters", {})
    src = params.get("synthguard_pythonpath", {}).get("string_value", "")
    if src and src not in sys.path:
        sys.path.insert(0, src)
    from serving.triton import backend

    return backend


class TritonPythonModel:
    def initialize(self, args):
        backend = import_backend(args)
        self._model = backend.PerRequestModel(
            pb_utils, backend.TextEncoderBackend.from_args(args)
        )

    def execute(self, requests):
        return self._model.execute(requests)
