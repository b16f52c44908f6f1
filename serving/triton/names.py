"""Contract: every Triton model name, tensor name, dtype and dims, in one place.

The committed ``model_repository/`` configs, the exporter, the python-backend shims,
the async client and the contract tests all read these constants. Dims exclude the
batch dimension (every model batches, ``max_batch_size > 0``). Some dims depend on the
trained artifacts and are symbolic here: `SYM_EMBED_DIM` (the encoder's projection
width), `SYM_BLOCKS` / `SYM_BLOCK_DIM` (its per-block CLS tokens) and `SYM_EXEMPLARS`
(``2 * k`` neighbour strings of the kNN head); `resolve_dims` fills them from a
manifest's feature layout, or with the embedded encoder's defaults.

The encoder returns ``embedding`` and ``cls_tokens``; every head takes both and reads
its own `serving.scoring.views.FeatureView` of them.

The text branch (`serving.text_source`): the pipeline takes an optional ``caption``
(BYTES); when the artifact has a text source it sends each image's text (its
caption, or the fixed prompt) to `TEXT_ENCODER_MODEL` (the CLIP text tower of the
operator's Hugging Face directory) and the ``text_embedding`` to ``head_mlp``, whose
config then has that extra input (`TEXT_INPUTS`). Without a text source the exporter
leaves the text encoder model out and ``head_mlp`` image-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from serving.encoders.onnx_clip import BLOCK_DIM as _EMBEDDED_BLOCK_DIM
from serving.encoders.onnx_clip import EMBED_DIM as _EMBEDDED_ENCODER_DIM
from serving.preprocessing import SIZE
from serving.scoring.views import FeatureLayout

ENCODER_MODEL: Final = "clip_image_encoder"
PIPELINE_MODEL: Final = "synthguard_detector"
# head kind (manifest ``HeadRecord.kind``) -> Triton model serving one head of it
HEAD_MODELS: Final[dict[str, str]] = {
    "linear_probe": "head_linear_probe",
    "mlp": "head_mlp",
    "knn": "head_knn",
    "rine": "head_rine",
}
MODELS: Final = (ENCODER_MODEL, *HEAD_MODELS.values(), PIPELINE_MODEL)
# exported only for artifacts with a text source (`serving.text_source`)
TEXT_ENCODER_MODEL: Final = "clip_text_encoder"
TEXT_MODELS: Final = (TEXT_ENCODER_MODEL,)
TEMPLATE_MODELS: Final = (*MODELS, *TEXT_MODELS)  # what model_repository/ holds

# symbolic dims, filled by `resolve_dims`; the defaults are the committed configs'
SYM_EMBED_DIM: Final = "embed_dim"
SYM_BLOCKS: Final = "n_blocks"
SYM_BLOCK_DIM: Final = "block_dim"
SYM_EXEMPLARS: Final = "exemplars"
SYM_TEXT_DIM: Final = "text_dim"
DEFAULT_EMBED_DIM: Final = _EMBEDDED_ENCODER_DIM
DEFAULT_LAYOUT: Final = FeatureLayout(_EMBEDDED_ENCODER_DIM, 12, _EMBEDDED_BLOCK_DIM)
DEFAULT_KNN_K: Final = 1
# the committed text encoder's width (CLIP ViT-B/16's text projection); the exporter
# writes the manifest's ``text_dim``
DEFAULT_TEXT_DIM: Final = 512
MAX_BATCH_SIZE: Final = 32

# the int8 CPU encoder file inside the encoder's version dir, and the GPU variant's
ENCODER_CPU_FILE: Final = "clip_encoder.int8.onnx"
ENCODER_GPU_FILE: Final = "model.onnx"
MANIFEST_FILE: Final = "manifest.json"
EXPORT_MANIFEST_FILE: Final = "export_manifest.json"
VERSION: Final = "1"

# config.pbtxt parameters written by the exporter
PARAM_PYTHONPATH: Final = "synthguard_pythonpath"
PARAM_HEAD: Final = "synthguard_head"
PARAM_HEADS: Final = "synthguard_heads"
PARAM_THRESHOLD: Final = "synthguard_threshold"
PARAM_UNCERTAIN_LOW: Final = "synthguard_uncertain_low"
PARAM_VERSIONS: Final = "synthguard_versions"
PARAM_SCORE_REFERENCE: Final = "synthguard_score_reference"  # drift reference, JSON
PARAM_THREADS: Final = "synthguard_intra_op_threads"
# clip_text_encoder: the operator's Hugging Face CLIP directory (text tower)
PARAM_TEXT_TOWER_DIR: Final = "synthguard_text_tower_dir"
# head_knn: the learner's feedback bank directory, polled for new versions
PARAM_FEEDBACK_BANK: Final = "synthguard_feedback_bank_dir"
FEEDBACK_POLL_S: Final = 1.0

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a Triton model.

    Attributes:
        name: Tensor name on the wire.
        dtype: Triton dtype without the ``TYPE_`` prefix (``UINT8``, ``FP32``, ``BYTES``).
        dims: Per-item dims (no batch dim); strings are symbols for `resolve_dims`.
    """

    name: str
    dtype: str
    dims: tuple[Dim, ...]

    @property
    def config_dtype(self) -> str:
        """The dtype as written in ``config.pbtxt`` (``TYPE_FP32``)."""
        return f"TYPE_{'STRING' if self.dtype == 'BYTES' else self.dtype}"


IMAGE: Final = TensorSpec("image", "UINT8", (SIZE, SIZE, 3))
EMBEDDING: Final = TensorSpec("embedding", "FP32", (SYM_EMBED_DIM,))
CLS_TOKENS: Final = TensorSpec("cls_tokens", "FP32", (SYM_BLOCKS, SYM_BLOCK_DIM))
ENCODER_OUTPUTS: Final = (EMBEDDING, CLS_TOKENS)
SCORE: Final = TensorSpec("score", "FP32", (1,))
EXEMPLARS: Final = TensorSpec("exemplars", "BYTES", (SYM_EXEMPLARS,))
PROBABILITY: Final = TensorSpec("probability", "FP32", (1,))
LABEL: Final = TensorSpec("label", "BYTES", (1,))
# the kNN head's largest cosine similarity to either bank (novelty's input)
BANK_SIMILARITY: Final = TensorSpec("bank_similarity", "FP32", (1,))
# why a label is ``uncertain`` beyond the probability band, `REASON_SEPARATOR`-joined
# (empty: none); `serving.scoring.novelty`
REASONS: Final = TensorSpec("reasons", "BYTES", (1,))
REASON_SEPARATOR: Final = ","
# the feedback bank version the kNN head scored with (empty: training banks only)
BANK_VERSION: Final = TensorSpec("bank_version", "BYTES", (1,))
# the text branch: the pipeline's optional caption (UTF-8; absent or empty: none),
# the text encoder's input text and its output, which head_mlp then also takes
CAPTION: Final = TensorSpec("caption", "BYTES", (1,))
TEXT: Final = TensorSpec("text", "BYTES", (1,))
TEXT_EMBEDDING: Final = TensorSpec("text_embedding", "FP32", (SYM_TEXT_DIM,))
# inputs a model's config has only when the artifact has a text source
TEXT_INPUTS: Final[dict[str, tuple[TensorSpec, ...]]] = {
    HEAD_MODELS["mlp"]: (TEXT_EMBEDDING,)
}
# inputs a client may leave out (``optional: true`` in the config)
OPTIONAL_INPUTS: Final[dict[str, tuple[str, ...]]] = {PIPELINE_MODEL: (CAPTION.name,)}


def head_score(kind: str) -> TensorSpec:
    """The pipeline output carrying one head kind's raw score (``score_<kind>``)."""
    return TensorSpec(f"score_{kind}", "FP32", (1,))


HEAD_OUTPUTS: Final[dict[str, tuple[TensorSpec, ...]]] = {
    "linear_probe": (SCORE,),
    "mlp": (SCORE,),
    "knn": (SCORE, EXEMPLARS, BANK_SIMILARITY, BANK_VERSION),
    "rine": (SCORE,),
}
PIPELINE_OUTPUTS: Final = (
    EMBEDDING,
    *(head_score(kind) for kind in HEAD_MODELS),
    PROBABILITY,
    LABEL,
    EXEMPLARS,
    REASONS,
    BANK_VERSION,
)
# model name -> (inputs, outputs)
MODEL_IO: Final[dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]] = {
    ENCODER_MODEL: ((IMAGE,), ENCODER_OUTPUTS),
    **{
        model: (ENCODER_OUTPUTS, HEAD_OUTPUTS[kind])
        for kind, model in HEAD_MODELS.items()
    },
    PIPELINE_MODEL: ((IMAGE, CAPTION), PIPELINE_OUTPUTS),
    TEXT_ENCODER_MODEL: ((TEXT,), (TEXT_EMBEDDING,)),
}


def model_io(
    model: str, text: bool
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A model's inputs and outputs, with its `TEXT_INPUTS` when `text` is set."""
    inputs, outputs = MODEL_IO[model]
    return (*inputs, *(TEXT_INPUTS.get(model, ()) if text else ())), outputs


def resolve_dims(
    spec: TensorSpec,
    layout: FeatureLayout = DEFAULT_LAYOUT,
    knn_k: int = DEFAULT_KNN_K,
) -> tuple[int, ...]:
    """Concrete dims of a tensor for one set of artifacts.

    Args:
        spec: The tensor.
        layout: The encoder's feature layout (manifest ``encoder``).
        knn_k: Neighbours per bank of the served kNN head (2k exemplar strings).

    Returns:
        The dims with every symbol replaced.
    """
    values = {
        SYM_EMBED_DIM: layout.embed_dim,
        SYM_BLOCKS: layout.n_blocks,
        SYM_BLOCK_DIM: layout.block_dim,
        SYM_EXEMPLARS: 2 * knn_k,
        SYM_TEXT_DIM: layout.text_dim or DEFAULT_TEXT_DIM,
    }
    return tuple(values[d] if isinstance(d, str) else d for d in spec.dims)
