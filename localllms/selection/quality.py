"""How good is it? Bits per byte: quality on the same text for models with different tokenizers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..bits_per_byte import bits_per_byte_of, predicted_bytes  # noqa: F401 - re-exported beside bits_per_byte
from ..build import BuildInfo, current_build
from ..errors import UserError
from ..models import ResolvedModel
from ..paths import cache_dir, content_key, write_atomic

SELECT_VERSION = "1"  # bump when cached numbers would change


@dataclass(frozen=True)
class BitsPerByte:
    """Negative log-likelihood of a text in bits, per UTF-8 byte of the text predicted."""

    model: str
    n_prompts: int
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes those tokens spell
    bits: float

    @property
    def bpb(self) -> float:
        return self.bits / self.bytes

    @property
    def bits_per_token(self) -> float:
        return self.bits / self.tokens

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens


def bits_per_byte(
    model: ResolvedModel,
    texts: Sequence[str],
    threads: int,
    build: BuildInfo | None = None,
    n_ctx: int = 1024,
    use_cache: bool = True,
) -> BitsPerByte:
    """Bits per byte over ``texts``: comparable across tokenizers, unlike perplexity per token.

    Each text is scored as its own sequence through the binding. Every token after the
    first is predicted; the first is the BOS token for models that add one (Gemma), and
    the first text token for models that do not (SmolLM2), whose bytes are then left out.
    Cached by model, build, context and texts, since the number is deterministic for a build and CPU.
    """
    from ..evaluate import LogitsModel, log_softmax

    build = build or current_build()
    key = content_key(SELECT_VERSION, model.sha256, build.key, n_ctx, list(texts))
    cached = cache_dir("selection") / f"bpb-{key}.json"
    if use_cache and cached.exists():
        # keyed by the file's digest: the same file under another name (a path, a catalog name) is named as asked
        return BitsPerByte(**{**json.loads(cached.read_text()), "model": model.spec})
    lm = LogitsModel(model, n_ctx, threads, build)
    bits, n_tokens, n_bytes = 0.0, 0, 0
    try:
        for text in texts:
            tokens = lm.tokenize(text)
            if len(tokens) < 2:
                continue
            logprobs = log_softmax(lm.logits(tokens, 0, len(tokens) - 1))
            nll = -logprobs[np.arange(len(tokens) - 1), tokens[1:]].astype(np.float64)
            bits += float(nll.sum()) / math.log(2)
            n_tokens += len(tokens) - 1
            # bytes predicted = the text minus what the unpredicted first token spells (b"" for BOS)
            n_bytes += len(text.encode("utf-8")) - len(lm.llm.detokenize([int(tokens[0])]))
    finally:
        lm.close()
    if n_tokens == 0:
        raise UserError(f"No text had two tokens or more under {model.path.name}; give longer prompts.")
    result = BitsPerByte(model.spec, len(texts), n_tokens, n_bytes, bits)
    write_atomic(cached, json.dumps(asdict(result)))
    return result


def quality_table(results: Sequence[BitsPerByte]) -> pd.DataFrame:
    rows = [
        {
            "model": r.model,
            "bits per byte": round(r.bpb, 4),
            "bits per token": round(r.bits_per_token, 3),
            "bytes per token": round(r.bytes_per_token, 3),
            "predicted tokens": r.tokens,
            "bytes": r.bytes,
        }
        for r in results
    ]
    return pd.DataFrame(rows).set_index("model")
