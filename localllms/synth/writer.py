"""Writing a synthetic GGUF: the header llama.cpp needs, then valid blocks of made-up values.

The header (``GGUFWriter``) carries the architecture's hyperparameters, a generated tokenizer of
the published vocabulary size, and the tensor table; the tensor data is written here, in chunks:
one buffer of valid blocks per type, drawn once and tiled over every tensor of that type, so a
7B file is written at disk speed without holding it in memory.

Values, chosen so that every logit stays finite: the fp16 scale fields of a quantized block are
small positive numbers (``SCALE_RANGE``), its other bytes random (every bit pattern of a quant,
a packed sub-scale or a grid index of these types decodes to a finite weight), except Q8_0, whose
blocks are normal values quantized as llama-quantize does (``q8_0_blocks`` says why); F16/F32
matrices are small normal values; norms are ones and biases zeros, as a freshly initialised model has.

The sparse F16 *probe* (``write_probe``) has the same header with F16 matrices and F32 vectors, as
``convert_hf_to_gguf`` writes them, and no data: the file is extended with ``truncate``, so a
15 GB F16 7B costs its header on disk. ``llama-quantize --dry-run`` reads only its header.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..gguf_file import SYNTHETIC_KEY
from ..gguf_file import SYNTHETIC_NOTE as NAME_SUFFIX
from ..selection.published import Hyperparameters, tensor_bytes

if TYPE_CHECKING:
    from gguf import GGUFWriter

ALIGNMENT = 32  # GGUF's default data alignment (general.alignment is not written)
# fp16 block scales: above fp16's subnormals (6.1e-5), and small enough that K-quant weights (scale x
# 6-bit sub-scale x quant) stay near a trained model's magnitudes, so 80 layers keep the f16 KV cache finite
SCALE_RANGE = (1e-4, 1e-3)
WEIGHT_STD = 0.02  # F16/F32 matrices: a typical initialisation scale
CHUNK_BYTES = 8 << 20  # one tile of random blocks per type; tensors are written in tiles of this size
# Byte offsets of the fp16 scale fields (d, dmin, m) inside one block, from the block structs of the
# vendored ggml/src/ggml-common.h; every other byte of these blocks may be random.
HALF_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q1_0": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ2_S": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,), "IQ1_S": (0,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,),
}  # fmt: skip
FLOAT_TYPES = ("F32", "F16", "BF16")


def block_layout(type_name: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


def supported(type_name: str) -> bool:
    return type_name in FLOAT_TYPES or type_name in HALF_FIELDS or type_name in ("IQ1_M", "MXFP4")


def _halves(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(*SCALE_RANGE, n).astype("<f2").view("<u2")


def q8_0_blocks(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Q8_0 blocks of Gaussian weights quantized by llama-quantize's rule (d = max|x| / 127,
    q = round(x / d)). Uniformly random bytes generated 8 % slower than a real Q8_0 file of the
    same shapes (0.92x in paired llama-bench runs, 2026-12-07), most of the extra time inside the
    integer dot product (perf), and these blocks did not (1.02x): the speed of that kernel depends
    on the values it multiplies."""
    x = rng.normal(0, WEIGHT_STD, (n, 32)).astype(np.float32)
    d = np.abs(x).max(axis=1) / np.float32(127)
    q = np.round(x / d[:, None]).astype(np.int8)
    return np.concatenate([d.astype("<f2").view(np.uint8).reshape(n, 2), q.view(np.uint8)], axis=1)


def random_blocks(type_name: str, n_bytes: int, rng: np.random.Generator) -> np.ndarray:
    """``n_bytes`` (a whole number of blocks) of valid ``type_name`` data, as bytes."""
    if type_name == "F32":
        return rng.normal(0, WEIGHT_STD, n_bytes // 4).astype("<f4").view(np.uint8)
    if type_name == "F16":
        return rng.normal(0, WEIGHT_STD, n_bytes // 2).astype("<f2").view(np.uint8)
    if type_name == "BF16":  # the top half of a float32
        return (rng.normal(0, WEIGHT_STD, n_bytes // 2).astype("<f4").view("<u4") >> 16).astype("<u2").view(np.uint8)
    size = block_layout(type_name)[1]
    if type_name == "Q8_0":
        return q8_0_blocks(n_bytes // size, rng).reshape(-1)
    blocks = rng.integers(0, 256, (n_bytes // size, size), dtype=np.uint8)
    if type_name == "MXFP4":
        blocks[:, 0] = rng.integers(118, 122, len(blocks))  # E8M0 scale 2^(e-127): about 2^-7
    elif type_name == "IQ1_M":
        # the fp16 scale is spread over the top nibble of the four uint16 sub-scales at byte 48
        scales = blocks[:, 48:56].copy().view("<u2")
        half = _halves(rng, len(blocks))
        for i in range(4):
            scales[:, i] = (scales[:, i] & 0x0FFF) | (((half >> (4 * i)) & 0xF) << 12)
        blocks[:, 48:56] = scales.view(np.uint8)
    else:
        for offset in HALF_FIELDS[type_name]:
            blocks[:, offset : offset + 2] = _halves(rng, len(blocks)).reshape(-1, 1).view(np.uint8)
    return blocks.reshape(-1)


def vector_values(name: str, n: int) -> np.ndarray:
    """A 1-D F32 tensor: norms are ones (an identity scale), biases zeros."""
    return (np.ones if "norm" in name else np.zeros)(n, dtype="<f4")


# --------------------------------------------------------------------------- header


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _digits(n: int) -> list[int]:
    out = []
    while n:
        n, d = divmod(n, 256)
        out.append(d)
    return out[::-1]


def add_tokenizer(writer: GGUFWriter, hp: Hyperparameters) -> None:
    """A generated tokenizer with exactly ``hp.vocab`` tokens, of the model's kind.

    BPE (``gpt2``): the 256 byte tokens, then token n written as n's base-256 digits in the byte
    alphabet, made by the merge (n // 256, n % 256), so every merge joins two tokens in the
    vocabulary (one merge per token beyond the bytes, as the memory estimate assumes), and two
    control tokens for BOS and EOS. SentencePiece (``llama``): <unk>, <s>, </s>, the 256 byte
    tokens, then pieces numbered in hex with decreasing scores; no merges.
    """
    v = hp.vocab
    if hp.tokenizer == "bpe":
        alphabet = _bytes_to_unicode()
        n_merged = max(0, v - 256 - 2)
        tokens = alphabet[: min(v, 256)]
        tokens += ["".join(alphabet[d] for d in _digits(n)) for n in range(256, 256 + n_merged)]
        merges = [f"{tokens[n // 256]} {alphabet[n % 256]}" for n in range(256, 256 + n_merged)]
        tokens += ["<|synthetic_bos|>", "<|synthetic_eos|>"][: v - len(tokens)]
        types = [1] * (v - 2) + [3, 3]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(v - 2)
        writer.add_eos_token_id(v - 1)
        writer.add_add_bos_token(False)
    else:
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        tokens += [f"▁{n:x}" for n in range(v - len(tokens))]  # short, like real pieces: the header's size
        types = [2, 3, 3] + [6] * 256 + [1] * (v - 259)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(v - 259)])
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(False)


def add_metadata(writer: GGUFWriter, hp: Hyperparameters, file_type: int) -> None:
    """What llama.cpp reads to build the architecture (the keys ``convert_hf_to_gguf`` writes)."""
    writer.add_name(f"{hp.model} ({NAME_SUFFIX})")
    writer.add_bool(SYNTHETIC_KEY, True)
    writer.add_file_type(file_type)
    writer.add_quantization_version(2)
    writer.add_block_count(hp.layers)
    writer.add_context_length(hp.trained_context)
    writer.add_embedding_length(hp.embedding)
    writer.add_feed_forward_length(hp.ffn)
    writer.add_head_count(hp.heads)
    writer.add_head_count_kv(hp.kv_heads)
    if hp.head_dim * hp.heads != hp.embedding or hp.arch.startswith("gemma"):
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if hp.arch == "llama":
        writer.add_rope_dimension_count(hp.head_dim)
        writer.add_vocab_size(hp.vocab)
    if hp.rope_theta:
        writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.norm_eps or 1e-6)
    if hp.sliding_window:
        writer.add_sliding_window(hp.sliding_window)  # gemma2 and gemma3 take their layer pattern from the arch
    add_tokenizer(writer, hp)


Tensor = tuple[str, tuple[int, ...], str]  # name, ggml shape (row length first), type name


def _header(path: Path, hp: Hyperparameters, file_type: int, tensors: Sequence[Tensor]) -> GGUFWriter:
    from gguf import GGMLQuantizationType, GGUFWriter

    writer = GGUFWriter(path, hp.arch)
    add_metadata(writer, hp, file_type)
    for name, shape, type_name in tensors:
        writer.add_tensor_info(
            name, tuple(reversed(shape)), np.dtype(np.float32), tensor_bytes(shape, type_name),
            raw_dtype=GGMLQuantizationType[type_name],
        )  # fmt: skip
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return writer


def _pad(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def data_bytes(tensors: Sequence[Tensor]) -> int:
    """Bytes of the data section: every tensor padded to the alignment."""
    return sum(_pad(tensor_bytes(shape, t)) for _, shape, t in tensors)


def write_probe(path: Path, hp: Hyperparameters, tensors: Sequence[Tensor], file_type: int) -> int:
    """The sparse probe: the full header, and a data section that is one hole. Returns the
    header's length padded to the alignment (the final file's header has the same length)."""
    writer = _header(path, hp, file_type, tensors)
    fout = writer.fout[0]
    start = _pad(fout.tell())
    fout.truncate(start + data_bytes(tensors))
    writer.close()
    return start


def write_synthetic(
    path: Path,
    hp: Hyperparameters,
    tensors: Sequence[Tensor],
    file_type: int,
    seed: int = 0,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> int:
    """The synthetic file itself (``path`` is written directly: the caller renames it into place).
    Returns its size in bytes."""
    rng = np.random.default_rng(seed)
    writer = _header(path, hp, file_type, tensors)
    fout = writer.fout[0]
    fout.write(b"\0" * (_pad(fout.tell()) - fout.tell()))
    on_bytes(fout.tell())
    tiles: dict[str, bytes] = {}
    for name, shape, type_name in tensors:
        n = tensor_bytes(shape, type_name)
        reported = 0
        if len(shape) == 1 and type_name == "F32":
            fout.write(vector_values(name, shape[0]).tobytes())
        else:
            block = block_layout(type_name)[1]
            if type_name not in tiles:
                tiles[type_name] = random_blocks(type_name, CHUNK_BYTES // block * block, rng).tobytes()
            tile = memoryview(tiles[type_name])
            for start in range(0, n, len(tile)):
                fout.write(tile[: min(len(tile), n - start)])
                on_bytes(min(len(tile), n - start))  # large tensors report tile by tile
            reported = n
        fout.write(b"\0" * (_pad(n) - n))
        on_bytes(_pad(n) - reported)
    size = fout.tell()
    writer.close()
    return size
