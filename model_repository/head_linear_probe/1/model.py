"""Triton shim: one detector head (logic in serving.triton.backend.HeadBackend)."""

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
        self._mod = import_backend(args)
        self._backend = self._mod.HeadBackend.from_args(args)

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            inputs = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self._backend.input_names
            }
            outputs = self._backend.run(inputs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            code = getattr(pb_utils.TritonError, self._mod.error_code(exc))
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), code)
            )
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(k, v) for k, v in outputs.items()]
        )
