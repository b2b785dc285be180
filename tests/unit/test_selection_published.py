"""The estimate from published hyperparameters: tensors, types and bytes, checked by hand on small cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllms import selection
from localllms.errors import UserError
from localllms.selection.fit_params import parse as parse_fit_params_log
from localllms.selection.published import Hyperparameters, published_count

MIB = 2**20
GIB = 2**30
# ggml's block layouts (weights per block, bytes per block), written out here rather than read from gguf
Q4_K, Q5_K, Q6_K, Q8_0, Q5_0, F16, F32 = (256, 144), (256, 176), (256, 210), (32, 34), (32, 22), (1, 2), (1, 4)


def _bytes(n: int, layout: tuple[int, int]) -> int:
    return n // layout[0] * layout[1]


def tiny(**changes: object) -> Hyperparameters:
    """A two-layer llama: 256 wide, FFN 512, 4 heads of 64 sharing 2 KV heads, 1,000 tokens, untied."""
    base: dict[str, object] = dict(
        model="tiny", arch="llama", parameters="1.69M", layers=2, embedding=256, ffn=512, heads=4, kv_heads=2,
        head_dim=64, vocab=1000, tied_embeddings=False, sliding_window=0, swa_period=0, trained_context=4096,
        tokenizer="bpe", source="none",
    )  # fmt: skip
    base.update(changes)
    return Hyperparameters(**base)  # type: ignore[arg-type]


def test_tensors_and_parameter_count_of_a_small_llama() -> None:
    hp = tiny()
    shapes = dict(selection.tensors(hp))
    assert shapes["token_embd.weight"] == (256, 1000) and shapes["output.weight"] == (256, 1000)
    assert shapes["blk.1.attn_q.weight"] == (256, 256) and shapes["blk.1.attn_k.weight"] == (256, 128)
    assert shapes["blk.0.attn_output.weight"] == (256, 256) and shapes["blk.0.ffn_down.weight"] == (512, 256)
    assert len(shapes) == 3 + 2 * 9  # embeddings, output, output norm; 9 tensors per llama layer
    per_layer = 256 * 256 * 2 + 256 * 128 * 2 + 3 * 256 * 512 + 2 * 256
    assert selection.counted_parameters(hp) == 2 * 256 * 1000 + 256 + 2 * per_layer  # 1,692,928
    assert selection.parameter_check(hp)["agrees"]  # "1.69M" within 1 %
    tied = tiny(tied_embeddings=True)
    assert "output.weight" not in dict(selection.tensors(tied))
    qwen = dict(selection.tensors(tiny(arch="qwen2")))
    assert qwen["blk.0.attn_q.bias"] == (256,) and qwen["blk.0.attn_k.bias"] == (128,)
    gemma = dict(selection.tensors(tiny(arch="gemma3", tied_embeddings=True)))
    assert gemma["blk.0.attn_q_norm.weight"] == (64,) and gemma["blk.0.post_ffw_norm.weight"] == (256,)


def test_q4_k_m_types_and_bytes_by_hand() -> None:
    hp = tiny()

    def t(name: str) -> str:
        return selection.tensor_type(name, dict(selection.tensors(hp))[name], "Q4_K_M", hp)

    assert t("output.weight") == "Q6_K" and t("token_embd.weight") == "Q4_K"
    assert t("output_norm.weight") == "F32" and t("blk.0.attn_norm.weight") == "F32"
    # use_more_bits(i, 2): i < 0, i >= 1, or (i - 0) % 3 == 2 -> only layer 1 of 2
    assert (t("blk.0.attn_v.weight"), t("blk.1.attn_v.weight")) == ("Q4_K", "Q6_K")
    assert (t("blk.0.ffn_down.weight"), t("blk.1.ffn_down.weight")) == ("Q4_K", "Q6_K")
    assert t("blk.1.attn_q.weight") == "Q4_K"
    expected = (
        _bytes(256 * 1000, Q4_K) + _bytes(256 * 1000, Q6_K) + 256 * 4  # embeddings, output, its norm
        + 2 * (_bytes(256 * 256, Q4_K) * 2 + _bytes(256 * 128, Q4_K) + 2 * 256 * 4)  # q, o, k, norms
        + 2 * _bytes(256 * 512, Q4_K) * 2  # gate and up
        + _bytes(256 * 128, Q4_K) + _bytes(256 * 128, Q6_K)  # v: layer 0, layer 1
        + _bytes(512 * 256, Q4_K) + _bytes(512 * 256, Q6_K)  # down: layer 0, layer 1
    )  # fmt: skip
    assert selection.weight_bytes(hp, "Q4_K_M") == expected
    f16 = selection.weight_bytes(hp, "F16")
    assert f16 == 2 * (selection.counted_parameters(hp) - (256 + 2 * 2 * 256)) + 4 * (256 + 2 * 2 * 256)
    assert (
        selection.weight_bytes(hp, "Q4_K_M")
        < selection.weight_bytes(hp, "Q5_K_M")
        < selection.weight_bytes(hp, "Q8_0")
        < f16
    )


def test_row_lengths_the_block_does_not_divide_fall_back() -> None:
    hp = tiny(embedding=320, heads=5, kv_heads=1)  # 320 = 1.25 blocks of 256, 10 blocks of 32
    t = {n: selection.tensor_type(n, s, "Q4_K_M", hp) for n, s in selection.tensors(hp)}
    assert t["blk.0.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0
    assert t["blk.1.attn_v.weight"] == "Q8_0"  # Q6_K -> Q8_0
    assert t["output.weight"] == "Q8_0"  # the output rule itself picks Q8_0 for such rows
    assert t["blk.0.ffn_down.weight"] == "Q4_K"  # its rows are the FFN's 512: no fallback
    assert selection.tensor_type("blk.0.attn_q.weight", (320, 320), "Q5_K_M", hp) == "Q5_1"  # Q5_K -> Q5_1


def test_the_70b_rule_and_the_published_qwen_72b() -> None:
    rows = {hp.model: hp for hp in selection.load_published()}
    llama = rows["Llama 3.1 70B"]
    v = [selection.tensor_type(f"blk.{i}.attn_v.weight", (8192, 1024), "Q4_K_M", llama) for i in range(80)]
    assert set(v) == {"Q5_K", "Q6_K"} and v[0] == "Q6_K" and v[40] == "Q5_K"  # 4-bit attn_v raised to Q5_K
    qwen = rows["Qwen2.5-72B-Instruct"]  # FFN 29,568 = 115.5 blocks of 256
    down = {selection.tensor_type(f"blk.{i}.ffn_down.weight", (29568, 8192), "Q4_K_M", qwen) for i in range(80)}
    assert down == {"Q5_0", "Q8_0"}


def test_every_published_row_agrees_with_its_parameter_count() -> None:
    rows = selection.load_published()
    assert {hp.catalog for hp in rows if hp.catalog} == {"smollm2-135m-instruct", "gemma-3-270m"}
    for hp in rows:
        check = selection.parameter_check(hp)
        assert check["agrees"], check
    gemma2 = next(hp for hp in rows if hp.model == "Gemma 2 9B")
    # the report's Table 2: 917,962,752 embedding + 8,324,201,984 other parameters, to the parameter
    assert selection.counted_parameters(gemma2) == 917_962_752 + 8_324_201_984
    assert published_count("7.61B") == pytest.approx(7.61e9) and published_count("9,242,164,736") == 9242164736
    with pytest.raises(UserError, match="Cannot read the parameter count"):
        published_count("about eight billion")


def test_estimate_from_hyperparameters_on_a_sliding_window_model() -> None:
    # gemma3-style: 6 layers, the 6th global; window 512 -> 1,024 cells on the other five
    hp = tiny(arch="gemma3", layers=6, tied_embeddings=True, sliding_window=512, swa_period=6, tokenizer="spm",
              trained_context=32768)  # fmt: skip
    arch = selection.published_architecture(hp, "Q8_0")
    assert arch.swa_layers == [True] * 5 + [False] and arch.merges == 0
    e = selection.estimate_architecture(arch, 8192)
    assert e.kv == (1 * 8192 + 5 * 1024) * 2 * (64 + 64) * 2
    assert e.compute == 4 * 512 * (3 * 512 + 4 * 256) + 2 * 512 * (8192 + 1024) + 4 * 1000
    assert e.tokenizer == selection.TOKEN_BYTES * 1000 and e.output == 4 * 1000
    assert e.total == e.weights + e.kv + e.compute + e.output + e.tokenizer + e.runtime
    assert e.weights == selection.weight_bytes(hp, "Q8_0")
    clipped = selection.estimate_architecture(arch, 40_000)
    assert clipped.clipped and clipped.n_ctx == 32768
    assert selection.published_architecture(tiny(), "Q4_K_M").merges == 1000 - 256  # BPE: tokens beyond the bytes
    with pytest.raises(UserError, match="must be positive"):
        selection.estimate_architecture(arch, 0)
    with pytest.raises(UserError, match="uses a window on 5 of every 6"):
        selection.published_architecture(tiny(arch="gemma3", sliding_window=512, swa_period=2), "Q8_0")


def test_bad_hyperparameters_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not modelled"):
        tiny(arch="mixtral")
    with pytest.raises(UserError, match="cannot share 3 KV heads"):
        tiny(kv_heads=3)
    with pytest.raises(UserError, match="File type 'Q3_K_S' is not modelled"):
        selection.weight_bytes(tiny(), "Q3_K_S")
    header = Path(selection.PUBLISHED_CSV).read_text().splitlines()[0]
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "\nX,llama,1B,two,1,1,1,1,1,1,no,0,0,1,bpe,k,,\n")
    with pytest.raises(UserError, match=r"bad.csv, line 2: invalid literal"):
        selection.load_published(bad)
    with pytest.raises(UserError, match="does not exist"):
        selection.load_published(tmp_path / "missing.csv")


def test_fit_rows_verdicts_and_the_summary() -> None:
    hp = tiny(trained_context=8192)
    rows = selection.fit_rows([hp], ["Q4_K_M"], [4096, 32768], [1, 2])
    assert list(rows["context"]) == ["4,096", "32,768", "trained maximum"]
    assert list(rows["clipped"]) == [False, True, False]
    e = selection.estimate_architecture(selection.published_architecture(hp, "Q4_K_M"), 4096)
    assert rows["total (GiB)"].iloc[0] == e.total / GIB
    assert rows["1 GB"].iloc[0] == selection.verdict(e.total, GIB) == "fits"  # a tiny model, far below 80 %
    summary = selection.will_it_fit(rows, [1, 2])
    row = summary.loc[("tiny", "Q4_K_M")]
    assert row["4,096: machine"] == "1 GB" and row["32,768: machine"] == "beyond its 8,192"
    assert row["trained max (tokens)"] == 8192
    with pytest.raises(UserError, match="at least one"):
        selection.fit_rows([hp], [], [4096], [8])


def test_fit_params_log_is_parsed() -> None:
    # the lines llama-fit-params logs at -lv 4 (format of common_memory_breakdown_print and common_params_fit_impl)
    log = (
        "0.02.103.228 I common_memory_breakdown_print: |   - Host               |"
        "                  776 =   222 +      39 +     514                |\n"
        "0.02.103.246 I common_memory_breakdown_print: |   - CPU_REPACK         |"
        "                   12 =    12 +       0 +       0                |\n"
        "0.02.291.297 I common_params_fit_impl: projected to use 776 MiB of host memory vs. 24105 MiB of total\n"
    )
    breakdown, projected = parse_fit_params_log(log)
    assert breakdown == {"Host": [776, 222, 39, 514], "CPU_REPACK": [12, 12, 0, 0]} and projected == 776
    assert parse_fit_params_log("nothing here") == ({}, 0)
