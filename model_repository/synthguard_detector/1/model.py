"""Triton shim: the BLS detector pipeline (logic in serving.triton.backend.DetectorPipeline)."""

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
        self._pipeline = self._mod.DetectorPipeline.from_args(args)

    async def execute(self, requests):
        try:
            names = self._pipeline.input_names
            batches = [self._mod.request_inputs(pb_utils, r, names) for r in requests]
            outputs = await self._pipeline.run_batch(batches, self._infer)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the requests' error
            code = getattr(pb_utils.TritonError, self._mod.error_code(exc))
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))
                for _ in requests
            ]
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in o.items()])
            for o in outputs
        ]

    async def _infer(self, model, inputs, output_names):
        request = pb_utils.InferenceRequest(
            model_name=model,
            requested_output_names=list(output_names),
            inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()],
        )
        response = await request.async_exec()
        if response.has_error():
            raise self._mod.InferenceUnavailableError(
                f"{model}: {response.error().message()}"
            )
        return {
            n: pb_utils.get_output_tensor_by_name(response, n).as_numpy()
            for n in output_names
        }
