"""Will it fit before you download it? The estimate from a model's published hyperparameters.

``memory.architecture`` reads an :class:`~.memory.Architecture` from a GGUF file. A reader weighing
a 70B model has no file yet, only its technical report or model card. ``published_architecture``
builds the same Architecture from those published numbers and a llama.cpp file type (``Q4_K_M``,
``F16``, ...), so the one estimator (``memory.estimate_architecture``) serves both.

What is computed, and how:

* **weights**: every tensor llama.cpp's converter writes for the architecture (``tensors``: token
  embeddings, the output matrix unless it is tied to them, and per layer the attention and
  gated-FFN matrices, norms and, for Qwen2, the Q/K/V biases), each with its shape from the
  hyperparameters, at the type ``llama-quantize`` gives it for that file type, and at that type's
  size per block of weights (``gguf.constants.GGML_QUANT_SIZES``). The type rules
  (``tensor_type``) restate ``llama_tensor_get_type`` in the vendored ``src/llama-quant.cpp`` for
  the file types in ``FILE_TYPES``, without an importance matrix or overrides: the output matrix
  (or tied embeddings) goes to Q6_K unless the type is Q8_0 or unquantized; Q4_K_M and Q5_K_M
  give Q6_K to ``attn_v`` and ``ffn_down`` in the first and last eighth of the layers and every
  third layer between; a "70B" model (80 layers, llama or qwen2) gets Q5_K for the remaining
  4-bit ``attn_v``; a row length that the type's block does not divide falls back (Q4_K to Q5_0,
  Q5_K to Q5_1, Q6_K to Q8_0). 1-D tensors stay F32, as ``convert_hf_to_gguf`` writes them.
  Checked against both catalog files, where it reproduces the GGUF's tensor bytes exactly.
* **the published parameter count** is not used for the bytes: it checks the hyperparameters.
  The tensors' elements must add up to it within 1 % (``parameter_check``), which catches a
  misread table; cards round and truncate their counts, and Qwen2.5-32B's says 32.5B where the
  shapes of its own configuration hold 32.76B.
* **merges**, which no report publishes: a byte-level BPE tokenizer is estimated at one merge per
  token beyond the 256 bytes (SmolLM2's file has 48,900 for 49,152 tokens); a SentencePiece one
  (Gemma) has none in the GGUF. Some BPE files carry more merges than tokens (Llama 3's converted
  tokenizer lists about twice as many), which puts that term tens of MiB low.

Approximations, besides the merges: the vocabulary is the published one (a file may pad it or add
special tokens), and small tensors the converter adds for some models (Llama 3.1's 64-entry RoPE
frequency table) are left out. Only dense transformers with the tensor sets of the architectures
in ``ARCHITECTURES`` are covered; mixture-of-experts models are not.

The models, their numbers and the source of each row are in
``data/reference/open_model_architectures.csv`` (``load_published``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..paths import PROJECT_ROOT
from .memory import SWA_PATTERNS, Architecture

PUBLISHED_CSV = PROJECT_ROOT / "data" / "reference" / "open_model_architectures.csv"

# llama.cpp architectures whose tensor sets ``tensors`` writes: extra per-layer tensors of each.
ARCHITECTURES = {
    "llama": (),
    "qwen2": ("qkv_bias",),
    "gemma2": ("post_norms",),
    "gemma3": ("post_norms", "qk_norm"),
}
# The file types modelled, with the default type of their large matrices (llama_ftype_get_default_type).
FILE_TYPES = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q6_K": "Q6_K",
    "Q5_K_M": "Q5_K",
    "Q4_K_M": "Q4_K",
    "Q4_1": "Q4_1",
    "Q4_0": "Q4_0",
}
_QUANTIZED = {"Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_1", "Q4_0", "Q5_0", "Q5_1"}
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # tensor_type_fallback, the types used here


@dataclass(frozen=True)
class Hyperparameters:
    """A model's architecture as its report or card publishes it (one row of the CSV)."""

    model: str
    arch: str  # llama.cpp's architecture name, which decides the tensor set and the SWA rule
    parameters: str  # as published: "7.61B", "135M", or an exact count
    layers: int
    embedding: int
    ffn: int  # width of one FFN projection (gate = up)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    sliding_window: int  # tokens; 0 when every layer attends to the whole context
    swa_period: int  # every n-th layer is global, the others use the window; 0 when none
    trained_context: int
    tokenizer: str  # "bpe" or "spm"
    source: str  # bib key of the report or card the numbers are quoted from
    catalog: str = ""  # the catalog name, for the two models on this machine
    note: str = ""
    # Read by the synthetic-model writer (``localllms.synth``), not by the estimate: they change no cost.
    rope_theta: float = 0.0  # RoPE base of the global layers; 0 when not given
    norm_eps: float = 0.0  # RMS norm epsilon; 0 when not given

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise UserError(
                f"{self.model}: architecture {self.arch!r} is not modelled; use one of {', '.join(ARCHITECTURES)}."
            )
        if self.tokenizer not in ("bpe", "spm"):
            raise UserError(f"{self.model}: tokenizer must be 'bpe' or 'spm', not {self.tokenizer!r}.")
        sizes = (self.layers, self.embedding, self.ffn, self.heads, self.kv_heads, self.head_dim, self.vocab)
        if min(sizes) < 1 or self.trained_context < 1:
            raise UserError(f"{self.model}: layers, widths, heads, vocabulary and context must all be positive.")
        if self.heads % self.kv_heads:
            raise UserError(f"{self.model}: {self.heads} attention heads cannot share {self.kv_heads} KV heads evenly.")
        if (self.sliding_window > 0) != (self.swa_period > 0):
            raise UserError(f"{self.model}: give both a sliding window and its layer period, or neither.")

    @property
    def swa_layers(self) -> list[bool]:
        """llama.cpp's pattern: layer il uses the window when il % n < n - 1 (n = ``swa_period``)."""
        n = self.swa_period
        return [n > 0 and il % n < n - 1 for il in range(self.layers)]


def tensors(hp: Hyperparameters) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors llama.cpp's converter writes for ``hp``, in file order, shapes as ggml's ``ne`` (row length first)."""
    extras = ARCHITECTURES[hp.arch]
    q, kv, d = hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim, hp.embedding
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (d, hp.vocab))]
    if not hp.tied_embeddings:
        out.append(("output.weight", (d, hp.vocab)))
    out.append(("output_norm.weight", (d,)))
    for il in range(hp.layers):
        b = f"blk.{il}."
        out += [(b + "attn_norm.weight", (d,)), (b + "attn_q.weight", (d, q)), (b + "attn_k.weight", (d, kv))]
        out += [(b + "attn_v.weight", (d, kv)), (b + "attn_output.weight", (q, d))]
        if "qkv_bias" in extras:
            out += [(b + "attn_q.bias", (q,)), (b + "attn_k.bias", (kv,)), (b + "attn_v.bias", (kv,))]
        if "qk_norm" in extras:
            out += [(b + "attn_q_norm.weight", (hp.head_dim,)), (b + "attn_k_norm.weight", (hp.head_dim,))]
        if "post_norms" in extras:
            out += [(b + "post_attention_norm.weight", (d,)), (b + "post_ffw_norm.weight", (d,))]
        out += [(b + "ffn_norm.weight", (d,)), (b + "ffn_gate.weight", (d, hp.ffn))]
        out += [(b + "ffn_up.weight", (d, hp.ffn)), (b + "ffn_down.weight", (hp.ffn, d))]
    return out


def _block(type_name: str) -> tuple[int, int]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def tensor_type(name: str, shape: tuple[int, ...], ftype: str, hp: Hyperparameters) -> str:
    """The type llama-quantize gives this tensor for file type ``ftype`` (see the module docstring)."""
    if ftype not in FILE_TYPES:
        raise UserError(f"File type {ftype!r} is not modelled; use one of {', '.join(FILE_TYPES)}.")
    if len(shape) < 2 or not name.endswith("weight") or "_norm." in name:
        return "F32"  # norms and biases are not quantized; the converter writes them as F32
    new = FILE_TYPES[ftype]
    if new not in _QUANTIZED:
        return new
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if name == "output.weight" or (hp.tied_embeddings and name == "token_embd.weight"):
        if shape[0] % _block(new)[0]:
            new = "Q8_0"
        elif new != "Q8_0":
            new = "Q6_K"
    elif name.endswith("attn_v.weight"):
        if ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, hp.layers):
            new = "Q6_K"
        is_70b = hp.arch in ("llama", "qwen2") and hp.layers == 80 and (hp.arch != "llama" or hp.heads != hp.kv_heads)
        if is_70b and new == "Q4_K":
            new = "Q5_K"  # llama-quant.cpp: attn_v is 8x smaller than attn_q in the 70B model
    elif name.endswith("ffn_down.weight"):
        if ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, hp.layers):
            new = "Q6_K"
    if shape[0] % _block(new)[0]:
        new = _FALLBACK.get(new, new)
        if shape[0] % _block(new)[0]:
            new = "F16"
    return new


def tensor_bytes(shape: tuple[int, ...], type_name: str) -> int:
    """Bytes of a tensor of this type: rows x (row length / block) x bytes per block."""
    block, size = _block(type_name)
    n = 1
    for s in shape:
        n *= s
    return n // block * size


def weight_bytes(hp: Hyperparameters, ftype: str) -> int:
    """The GGUF's tensor bytes for ``hp`` quantized to ``ftype`` by llama-quantize."""
    return sum(tensor_bytes(shape, tensor_type(name, shape, ftype, hp)) for name, shape in tensors(hp))


def counted_parameters(hp: Hyperparameters) -> int:
    """Parameters the tensors of ``hp`` hold (elements of every tensor)."""
    total = 0
    for _, shape in tensors(hp):
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


_COUNT = re.compile(r"^\s*([\d.]+)\s*([KMBT]?)\s*$")
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
PARAMETER_TOLERANCE = 0.01  # published counts are rounded, truncated, or (Qwen2.5-32B's card) a little off


def published_count(text: str) -> float:
    """A published parameter count as a number: "7.61B" -> 7.61e9, "9,242,164,736" -> 9242164736."""
    m = _COUNT.match(text.replace(",", ""))
    if not m:
        raise UserError(f"Cannot read the parameter count {text!r}: write it as 7.61B, 135M or 9242164736.")
    return float(Decimal(m.group(1)) * _SCALE[m.group(2)])


def parameter_check(hp: Hyperparameters) -> dict:
    """The parameters the hyperparameters imply against the published count.

    Within ``PARAMETER_TOLERANCE`` they agree: a misread table (another model's row, the two
    FFN projections taken for one) moves the count by far more; a typo in a last digit may not.
    """
    published = published_count(hp.parameters)
    counted = counted_parameters(hp)
    diff = (counted - published) / published
    return {
        "model": hp.model,
        "published": hp.parameters,
        "from the hyperparameters": counted,
        "difference (%)": round(100 * diff, 2),
        "agrees": abs(diff) <= PARAMETER_TOLERANCE,
    }


def estimated_merges(hp: Hyperparameters) -> int:
    """BPE merges, which no report publishes: one per token beyond the 256 bytes; none for SentencePiece."""
    return max(0, hp.vocab - 256) if hp.tokenizer == "bpe" else 0


def published_architecture(hp: Hyperparameters, ftype: str) -> Architecture:
    """The Architecture the memory estimate needs, from published hyperparameters and a file type."""
    if hp.swa_period and SWA_PATTERNS.get(hp.arch, hp.swa_period) != hp.swa_period:
        raise UserError(
            f"{hp.model}: llama.cpp's {hp.arch} uses a window on {SWA_PATTERNS[hp.arch] - 1} of every "
            f"{SWA_PATTERNS[hp.arch]} layers, not {hp.swa_period - 1} of {hp.swa_period}."
        )
    swa = hp.swa_layers
    return Architecture(
        name=hp.arch,
        layers=hp.layers,
        embedding=hp.embedding,
        ffn=hp.ffn,
        head_count=hp.heads,
        head_count_kv=[hp.kv_heads] * hp.layers,
        key_length=hp.head_dim,
        value_length=hp.head_dim,
        vocab=hp.vocab,
        merges=estimated_merges(hp),
        sliding_window=hp.sliding_window if any(swa) else 0,
        swa_layers=swa,
        trained_context=hp.trained_context,
        weight_bytes=weight_bytes(hp, ftype),
    )


_INT_FIELDS = {f.name for f in fields(Hyperparameters) if f.type in ("int", int)}
_FLOAT_FIELDS = {f.name for f in fields(Hyperparameters) if f.type in ("float", float)}


def load_published(path: Path | str = PUBLISHED_CSV) -> list[Hyperparameters]:
    """The rows of the published-hyperparameters CSV; a malformed row is one clear sentence."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"The published hyperparameters file {path} does not exist.")
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for i, raw in enumerate(csv.DictReader(fh), start=2):
            try:
                values: dict[str, object] = {}
                for f in fields(Hyperparameters):
                    text = (raw.get(f.name) or "").strip()
                    if f.name in _INT_FIELDS:
                        values[f.name] = int(text)
                    elif f.name in _FLOAT_FIELDS:
                        values[f.name] = float(text) if text else 0.0
                    elif f.name == "tied_embeddings":
                        if text not in ("yes", "no"):
                            raise ValueError(f"tied_embeddings must be yes or no, not {text!r}")
                        values[f.name] = text == "yes"
                    else:
                        values[f.name] = text
                rows.append(Hyperparameters(**values))  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                raise UserError(f"{path.name}, line {i}: {exc}.") from exc
    names = [r.model for r in rows]
    if len(set(names)) != len(names):
        raise UserError(f"{path.name}: a model is listed twice.")
    return rows


def published_table(rows: Sequence[Hyperparameters]) -> pd.DataFrame:
    """The hyperparameters as quoted, with the parameter count they imply and its check."""
    out = []
    for hp in rows:
        check = parameter_check(hp)
        window = f"{hp.sliding_window} on {hp.swa_period - 1} of {hp.swa_period} layers" if hp.swa_period else "none"
        out.append(
            {
                "model": hp.model,
                "llama.cpp arch": hp.arch,
                "layers": hp.layers,
                "d_model": hp.embedding,
                "FFN": hp.ffn,
                "heads / KV heads": f"{hp.heads} / {hp.kv_heads}",
                "head dim": hp.head_dim,
                "vocabulary": hp.vocab,
                "tied embeddings": "yes" if hp.tied_embeddings else "no",
                "sliding window": window,
                "trained context": hp.trained_context,
                "parameters (published)": hp.parameters,
                "parameters (from the shapes)": f"{check['from the hyperparameters']:,}",
                "difference (%)": check["difference (%)"],
                "source": hp.source,
            }
        )
    return pd.DataFrame(out).set_index("model")
