"""Bits per byte from log-likelihoods the evaluator has already computed.

Perplexity per token cannot be compared across models with different tokenizers; bits per UTF-8
byte of the text can. The study's evaluator already has every predicted token's negative
log-likelihood, so bits per byte costs only the byte count of what each prompt's predicted tokens
spell (``predicted_bytes``: the vocabulary alone is loaded), not another pass over the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from .build import BuildInfo
from .models import ResolvedModel
from .paths import cache_dir, content_key, write_atomic


def predicted_bytes(model: ResolvedModel, texts: Sequence[str], build: BuildInfo | None = None) -> list[int]:
    """Per text, the UTF-8 bytes its predicted tokens spell: the text, less what the first token
    spells when it is a text token rather than BOS (SmolLM2 adds no BOS). Only the vocabulary is
    loaded; cached by model and texts."""
    from .build import use_build_for_binding

    key = content_key("bytes-1", model.sha256, list(texts))
    cached = cache_dir("selection") / f"bytes-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    use_build_for_binding(build)
    import llama_cpp

    lm = llama_cpp.Llama(model_path=str(model.path), vocab_only=True, verbose=False)
    try:
        out = []
        for text in texts:
            tokens = lm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            out.append(len(text.encode("utf-8")) - len(lm.detokenize([int(tokens[0])])) if tokens else 0)
    finally:
        lm.close()
    write_atomic(cached, json.dumps(out))
    return out


def bits_per_byte_of(nll_per_prompt: Sequence[np.ndarray], byte_counts: Sequence[int]) -> float:
    """Bits per byte from per-token negative log-likelihoods (nats) already computed, e.g. by the
    evaluator, with the bytes each prompt's predicted tokens spell."""
    bits = sum(float(np.asarray(n, dtype=np.float64).sum()) for n in nll_per_prompt) / math.log(2)
    return bits / sum(byte_counts)
