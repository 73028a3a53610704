"""Inference backends for dense encoders other than torch: the same model, run by another engine.

``openvino`` converts the model's transformer in memory with ``openvino.convert_model`` (fp32, no
quantisation) and runs it on the CPU; tokenisation, mean pooling and normalisation follow the
sentence-transformers folder's own modules. It is kept because it encodes faster than torch on
these CPUs with vectors equal to torch's to float tolerance (README, "Cheaper encoders"); int8
variants were measured and left out.

Vectors from a backend other than torch are cached under their own key: equal to tolerance is
not bit-equal, and a cache must never mix the two.
"""

from __future__ import annotations

import warnings

import numpy as np

from workbench.errors import ModelError, install_hint



class OpenVINOEncoder:
    """A sentence-transformers model (Transformer → mean Pooling → optional Normalize) run by OpenVINO.

    ``encode`` takes the arguments workbench passes to ``SentenceTransformer.encode`` and returns
    float32 vectors in the order of the texts.
    """

    def __init__(self, model, name: str):
        try:
            import openvino
        except ImportError as error:
            message = f"backend 'openvino' needs the openvino package: {install_hint('openvino')} ({error})"
            raise ModelError(message, name) from None
        modules = list(model)
        kinds = [type(module).__name__ for module in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or not _mean_pooling(
            modules[1]
        ):
            raise ModelError(
                f"backend 'openvino' runs transformer models with mean pooling; {name} is {' → '.join(kinds)}; "
                'use backend = "torch"',
                name,
            )
        self.tokenizer = model.tokenizer
        self.max_length = model.max_seq_length
        self.normalizes = len(modules) == 3
        transformer = modules[0].auto_model.eval()
        self.dimension = transformer.config.hidden_size
        example = self._tokens(["an example sentence", "another"], "pt")
        self.input_names = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in example]
        import torch

        with torch.inference_mode(), warnings.catch_warnings():
            # Tracing warns that shape checks become constants; for an encoder they are (tested against torch).
            warnings.simplefilter("ignore")
            converted = openvino.convert_model(
                transformer, example_input={key: example[key] for key in self.input_names}
            )
        self._compiled = openvino.Core().compile_model(converted, "CPU")
        self._output = self._compiled.outputs[0]  # last hidden state

    def _tokens(self, texts: list[str], tensors: str):
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors=tensors)

    def encode(
        self,
        texts: list[str],
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        """Returns one float32 vector per text (unit length when asked or when the model normalises)."""
        vectors = np.zeros((len(texts), self.dimension), np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")  # like lengths share a batch: less padding
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            tokens = self._tokens([texts[row] for row in rows], "np")
            hidden = self._compiled({key: tokens[key] for key in self.input_names})[self._output]
            mask = tokens["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            if normalize_embeddings or self.normalizes:
                pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            vectors[rows] = pooled
        return vectors


def _mean_pooling(pooling) -> bool:
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers 6
    if mode is not None:
        return mode == "mean"
    return bool(getattr(pooling, "pooling_mode_mean_tokens", False))  # sentence-transformers 5
