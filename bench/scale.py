"""Pruning models bigger than memory: layer-streamed SparseGPT 50 % on random-weight Llama models of
TinyLlama's shape (hidden 2048, FFN 5632, 32 heads over 4 KV heads) with SmolLM2's vocabulary (49,152,
tied head) at 4, 8 and 16 layers, stored in bfloat16 (the 16-layer model: 0.81 B parameters, 1.6 GB on
disk, 3.2 GB in float32).

Each model is written tensor by tensor (never whole in memory): weights ~ N(0, 0.02), norms 1, seed 0.
Each arm is one `prunekit prune magnitude --importance sparsegpt --stream` process with 16 calibration
windows of 256 tokens from brown/train.txt (seed 0), every other setting at its default (float32 work,
SparseGPT's sequential groups, block 128, dampening 1 %). Recorded from its summary: `peak_rss_mb` (the
process's resident high-water mark, imports included), `prune_seconds`, `layer_seconds`, and checked: the
shards are bfloat16 and every pruned matrix is exactly 50 % zero. Random weights make the timing and
memory real and the perplexity meaningless, so none is measured.

Run: python bench/scale.py [--layers 4 8 16]  -> bench/results/scale.{json,md,png}  (~25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from harness import BROWN, RESULTS, markdown_table, prunekit, work_dir, write_results

SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
             vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5)  # fmt: skip
CALIBRATION = ["--calibration-samples", "16", "--calibration-length", "256"]


def random_llama(layers: int, folder: Path) -> Path:
    """A random bfloat16 Llama of ``SHAPE`` with ``layers`` layers in ``folder``, a shard per layer."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    from prunekit.models import load_tokenizer
    from prunekit.packaged import smollm2
    from prunekit.shards import write_index, write_shard

    if (folder / "config.json").is_file():
        return folder
    config = LlamaConfig(num_hidden_layers=layers, dtype="bfloat16", architectures=["LlamaForCausalLM"], **SHAPE)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    names = [name for name in model.state_dict() if not (config.tie_word_embeddings and name == "lm_head.weight")]
    outside = [name for name in names if ".layers." not in name]
    total = len(outside) + layers
    generator = torch.Generator().manual_seed(0)

    def tensor(name: str, shape: torch.Size) -> torch.Tensor:
        if name.endswith("norm.weight"):
            return torch.ones(shape, dtype=torch.bfloat16)
        return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)

    folder.mkdir(parents=True, exist_ok=True)
    shapes = {name: value.shape for name, value in model.state_dict().items()}
    for number, name in enumerate(outside, start=1):
        write_shard(folder, number, total, {name: tensor(name, shapes[name])})
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        write_shard(folder, len(outside) + layer + 1, total,
                    {name: tensor(name, shapes[name]) for name in names if name.startswith(prefix)})  # fmt: skip
    write_index(folder, total)
    load_tokenizer(smollm2()).save_pretrained(folder)
    config.save_pretrained(folder)  # last: a folder with a config is complete
    return folder


def check_output(out: Path, summary: dict) -> dict:
    """The output's dtypes and the pruned matrices' exact sparsity."""
    from safetensors import safe_open

    dtypes = set()
    for shard in out.glob("model-*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            dtypes |= {handle.get_slice(name).get_dtype() for name in handle.keys()}
    per_matrix = set(summary["sparsity_per_module"].values())
    return {"dtypes": sorted(dtypes), "matrix_sparsities": sorted(per_matrix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    root = work_dir("scale")
    rows = []
    for layers in args.layers:
        folder = random_llama(layers, root / f"llama-{layers}")
        out = root / f"llama-{layers}-sparsegpt"
        summary = prunekit("prune", "magnitude", "--model", str(folder), "--data", BROWN, "--importance", "sparsegpt",
                           "--stream", *CALIBRATION, "--out", str(out), "--overwrite")  # fmt: skip
        params, seconds = summary["params_total"], summary["layer_seconds"]
        rows.append({
            "layers": layers, "params": params, "stored_gb": round(params * 2 / 1e9, 2),
            "float32_gb": round(params * 4 / 1e9, 2), "peak_rss_mb": summary["peak_rss_mb"],
            "prune_seconds": summary["prune_seconds"], "median_layer_seconds": round(statistics.median(seconds), 1),
            "layer_seconds": seconds, **check_output(out, summary),
        })  # fmt: skip
        write_results("scale", {"shape": SHAPE, "calibration": CALIBRATION, "rows": rows})
    first, last = rows[0], rows[-1]
    growth = round(100 * (last["peak_rss_mb"] / first["peak_rss_mb"] - 1), 1)
    body = [
        [str(r["layers"]), f"{r['params'] / 1e9:.2f} B", f"{r['stored_gb']} GB", f"{r['float32_gb']} GB",
         f"{r['peak_rss_mb'] / 1024:.2f} GiB", f"{r['prune_seconds'] / 60:.1f} min", str(r["median_layer_seconds"]),
         "/".join(str(s) for s in r["matrix_sparsities"])]
        for r in rows
    ]  # fmt: skip
    header = ["layers", "parameters", "bf16 on disk", "float32", "peak RSS", "time", "s / layer (median)", "sparsity"]
    table = markdown_table(header, body)
    note = (f"\nPeak RSS grows {growth} % from {first['layers']} to {last['layers']} layers "
            f"(the float32 model grows {last['float32_gb'] / first['float32_gb']:.1f}x).\n")  # fmt: skip
    write_results("scale", {"shape": SHAPE, "calibration": CALIBRATION, "rows": rows, "peak_growth_percent": growth},
                  table + note)  # fmt: skip
    plot(rows, RESULTS / "scale.png")  # beside the json and md (PRUNEKIT_BENCH_RESULTS moves all three)
    print(table + note)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r["layers"] for r in rows]
    fig, (memory, time) = plt.subplots(1, 2, figsize=(9, 3.5))
    memory.plot(layers, [r["peak_rss_mb"] / 1024 for r in rows], "o-", label="streamed peak RSS")
    memory.plot(layers, [r["float32_gb"] * 1e9 / 2**30 for r in rows], "s--", label="the model in float32")
    memory.set(xlabel="layers", ylabel="GiB", title="memory against depth")
    memory.legend()
    time.plot(layers, [r["median_layer_seconds"] for r in rows], "o-")
    time.set(xlabel="layers", ylabel="seconds per layer (median)", title="time per layer", ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
