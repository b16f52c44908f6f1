"""Benchmark: do the intermediate blocks' patch-token means beat their CLS tokens?

RINE reads each block's CLS token. Super-resolution and up-sampling traces are local,
so the mean of a block's 196 patch tokens may carry them better. This derives, from
the product's graph (`serving.encoders.onnx_clip.derived_model`), a second graph
whose ``cls_tokens`` output holds each block's patch-token mean instead (same
``ln_2`` tensor, same shape), extracts the benchmark's features with it (cached like
the product's, under the graph's own identity), and compares leave one family out,
with the product's probe (`serving.workflows.fit_heads`, default `HeadOptions`):

- ``cls``: the shipped features (CLS tokens of blocks 6-11);
- ``patch``: patch-token means of the same blocks, same probe;
- ``cls+patch``: the two probes' standardised logits averaged (scaled on the fold's
  calibration reals).

Threshold at 10 % FPR on the fold's calibration reals; columns as `bench.families`
(own reals, and the acceptance-shaped native PNG 224 view).

    python -m bench.patch_tokens --home .synthguard                  # split cal
    python -m bench.patch_tokens --home .synthguard --split test     # information

Selection reads the calibration split; the test split is for information only.
"""

from __future__ import annotations

from pathlib import Path

from bench.families import VariantRun, probe_fold, standardised
from serving.encoders.layer_graph import CLS_OUTPUT
from serving.encoders.onnx_clip import (
    OnnxClipEncoder,
    default_cache_dir,
    derived_model,
)
from serving.jobs import features_for
from serving.settings import ServingSettings


def patch_mean_graph(source: Path, target: Path) -> Path:
    """Write `source` with ``cls_tokens`` replaced by per-block patch-token means."""
    import onnx
    from onnx import TensorProto, helper

    if target.is_file():
        return target
    model = onnx.load(str(source))
    graph = model.graph
    concat = next(n for n in graph.node if n.name == CLS_OUTPUT)
    # each Concat input is Unsqueeze(Gather(tokens, 0)); tokens is the block tensor
    by_out = {o: n for n in graph.node for o in n.output}
    tokens = [by_out[by_out[u].input[0]].input[0] for u in concat.input]
    graph.initializer.extend(
        [
            helper.make_tensor("pm_start", TensorProto.INT64, [1], [1]),
            helper.make_tensor("pm_end", TensorProto.INT64, [1], [1 << 30]),
            helper.make_tensor("pm_axis", TensorProto.INT64, [1], [1]),
        ]
    )
    means = []
    for i, t in enumerate(tokens):
        sl, mean = f"pm_slice_{i}", f"pm_mean_{i}"
        graph.node.append(
            helper.make_node("Slice", [t, "pm_start", "pm_end", "pm_axis"], [sl])
        )
        graph.node.append(
            helper.make_node("ReduceMean", [sl], [mean], axes=[1], keepdims=1)
        )
        means.append(mean)
    concat.output[0] = "pm_cls_unused"
    out = next(o for o in graph.output if o.name == CLS_OUTPUT)
    graph.output.remove(out)
    graph.node.append(helper.make_node("Concat", means, [CLS_OUTPUT], axis=1))
    graph.output.append(
        helper.make_tensor_value_info(
            CLS_OUTPUT, TensorProto.FLOAT, ["batch", len(means), "width"]
        )
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    """Print, per held-out family, the three variants' AUC and accuracy."""
    run = VariantRun.from_argv(argv, __doc__)
    train, cal, scored, bench = run.train, run.cal, run.scored, run.bench
    source = derived_model(default_cache_dir())
    graph = patch_mean_graph(source, source.with_name("patchmean-" + source.name))
    encoder = OnnxClipEncoder(model_path=graph)
    settings = ServingSettings(home=run.home)
    # only the splits this run reads: the test split's extraction is 9 of 32 minutes
    ptrain, pcal = (
        features_for(settings, encoder, bench / s) for s in ("train", "cal")
    )
    pscored = (
        pcal if run.split == "cal" else features_for(settings, encoder, bench / "test")
    )
    for ours, theirs in ((train, ptrain), (cal, pcal), (scored, pscored)):
        if ours.paths != theirs.paths:
            raise SystemExit("feature rows out of order")
    table = run.table()
    for fam in run.families:
        c_cal, c_s = probe_fold(train, cal, scored, fam)
        p_cal, p_s = probe_fold(ptrain, pcal, pscored, fam)
        z = [standardised(r, s) for r, s in ((c_cal, c_s), (p_cal, p_s))]
        zc = [standardised(r, r) for r in (c_cal, p_cal)]
        variants = {
            "cls": (c_cal, c_s),
            "patch": (p_cal, p_s),
            "cls+patch": ((zc[0] + zc[1]) / 2, (z[0] + z[1]) / 2),
        }
        table.add(fam, variants)
    table.print_means()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
