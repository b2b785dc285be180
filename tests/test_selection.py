"""Model selection: metadata, the memory estimate against real peak RSS, bits per byte, cost arithmetic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from localllms import selection, serve
from localllms.corpus import load_texts, select_prompts
from localllms.errors import UserError
from localllms.models import resolve

MIB = 2**20


def test_model_cards_of_the_real_models(smollm2, gemma) -> None:
    cards = selection.model_cards(selection.load_candidates([smollm2, gemma]))
    s, g = cards.loc["smollm2-135m-instruct"], cards.loc["gemma-3-270m"]
    assert (cards["status"] == "ok").all()
    assert (s["architecture"], s["layers"], s["trained context"], s["vocabulary"]) == ("llama", 30, 8192, 49152)
    assert (g["architecture"], g["layers"], g["trained context"], g["vocabulary"]) == ("gemma3", 18, 32768, 262144)
    assert (s["quant"], g["quant"]) == ("Q4_1", "Q4_K_M")
    assert s["chat template"].startswith("yes") and g["chat template"].startswith("no")
    assert (s["license"], g["license"]) == ("apache-2.0", "gemma")
    assert 130 < s["parameters (M)"] < 140 and 250 < g["parameters (M)"] < 300
    assert 4.5 < s["bits/weight"] < 6.0


def test_gemma_sliding_window_layers_follow_llama_cpp(gemma, smollm2) -> None:
    arch = selection.architecture(gemma)
    assert arch.sliding_window == 512 and arch.n_swa_layers == 15  # 5 of every 6 layers
    assert [il for il in range(18) if not arch.swa_layers[il]] == [5, 11, 17]
    assert (arch.key_length, arch.value_length, arch.head_count_kv[0]) == (256, 256, 1)
    assert selection.kv_cells(arch, 8192) == (8192, 1024)  # window 512 + one batch of 512
    assert selection.kv_cells(arch, 300) == (512, 512)  # padded to 256, never above the full cache
    # 3 full layers x 2048 cells + 15 window layers x 1024 cells, 1 head x (256 + 256) x 2 bytes
    assert selection.kv_bytes(arch, 2048) == (3 * 2048 + 15 * 1024) * 512 * 2
    assert selection.kv_bytes(arch, 2048, n_parallel=2) == 2 * selection.kv_bytes(arch, 2048)
    assert selection.architecture(smollm2).n_swa_layers == 0


def test_context_is_clipped_to_the_trained_one(smollm2) -> None:
    e = selection.estimate_memory(smollm2, 32768)
    assert e.clipped and e.n_ctx == 8192
    assert e.kv == 8192 * 30 * 3 * (64 + 64) * 2
    table = selection.memory_table([smollm2], [2048, 8192, 32768])
    assert list(table["context"]) == [2048, 8192]  # 32768 clipped to 8192 is not listed twice
    assert list(table["note"]) == ["", "32768 clipped to the trained 8192"]
    with pytest.raises(UserError, match="must be positive"):
        selection.estimate_memory(smollm2, 0)


@pytest.mark.slow
@pytest.mark.parametrize(("which", "contexts"), [("smollm2", (2048, 8192)), ("gemma", (2048, 32768))])
def test_memory_estimate_within_15_percent_of_peak_rss(which, contexts, request, build) -> None:
    model = request.getfixturevalue(which)
    for ctx in contexts:
        est = selection.estimate_memory(model, ctx)
        meas = selection.measure_memory(model, ctx, 1, threads=2, build=build, probe_tokens=64)
        err = (est.total - meas.peak_rss) / meas.peak_rss
        assert abs(err) <= selection.MEMORY_TOLERANCE, (which, ctx, est.total / MIB, meas.peak_rss / MIB)
        # each part against what llama.cpp itself reports allocating
        assert meas.flash_attention
        assert est.kv / MIB == pytest.approx(meas.reported["KV"], abs=0.01)
        assert est.weights / MIB == pytest.approx(meas.reported["model"], abs=0.02)
        assert est.compute / MIB == pytest.approx(meas.reported["compute"], rel=0.05)
        assert est.output / MIB == pytest.approx(meas.reported["output"], abs=0.01)
        assert meas.rss_file < 40 * MIB  # weights were read into RAM, not left memory-mapped


def test_runtime_constant_matches_the_toy_model(build) -> None:
    measured = selection.runtime_footprint(build, threads=2)
    assert measured == pytest.approx(selection.RUNTIME_BYTES, rel=0.25)


def test_measurement_leaves_no_server_behind(build, tmp_path: Path) -> None:
    import psutil

    toy = selection.write_toy_model(tmp_path / "toy.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["toy.gguf"]  # written in one piece, no temporary left
    meas = selection.measure_memory(toy, 256, 1, threads=2, build=build, probe_tokens=8)
    assert meas.model == "toy.gguf" and meas.peak_rss >= meas.idle_rss > 0 and meas.load_seconds > 0
    assert meas.reported["KV"] > 0 and meas.prompt_ms > 0
    assert meas.pid and not serve.pid_exists(meas.pid)
    assert not [p for p in psutil.Process().children(recursive=True) if "llama-server" in p.name()]


def test_bad_candidates_are_reported_and_the_rest_evaluated(smollm2, tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a model\n")
    cands = selection.load_candidates([str(missing), smollm2.spec, str(not_gguf)])
    cards = selection.model_cards(cands)
    assert list(cards.index) == [str(missing), smollm2.spec, str(not_gguf)]
    assert "does not exist" in cards.loc[str(missing), "status"]
    assert "is not a GGUF file" in cards.loc[str(not_gguf), "status"]
    assert cards.loc[smollm2.spec, "status"] == "ok" and cards.loc[smollm2.spec, "layers"] == 30
    for c in cands:
        assert "\n" not in c.error and (c.ok or c.error.endswith("."))
    models = selection.usable(cands)
    assert [m.spec for m in models] == [smollm2.spec]
    table = selection.memory_table(models, [2048])
    assert list(table["model"]) == [smollm2.spec] and table["total (MiB)"].iloc[0] > 100


def test_verdict_thresholds() -> None:
    gib = 2**30
    assert selection.verdict(int(0.5 * gib), 10 * gib) == "fits"
    assert selection.verdict(8 * gib, 10 * gib) == "fits"  # exactly 80%
    assert selection.verdict(9 * gib, 10 * gib) == "tight"
    assert selection.verdict(11 * gib, 10 * gib) == "does not fit"


def test_largest_context_that_fits(gemma) -> None:
    arch = selection.architecture(gemma)
    available = int(selection.estimate_memory(gemma, 8192, arch=arch).total / selection.FIT_SHARE)
    assert selection.max_context(gemma, available, arch=arch) == 8192
    assert selection.max_context(gemma, 100 * 2**30, arch=arch) == 32768  # capped by the trained context


@pytest.fixture(scope="module")
def three_prompts() -> list[str]:
    texts, _ = load_texts("offline")
    return select_prompts(texts, 3)


def test_bits_per_byte_sanity(smollm2, gemma, three_prompts, build) -> None:
    s = selection.bits_per_byte(smollm2, three_prompts, threads=2, build=build, use_cache=False)
    g = selection.bits_per_byte(gemma, three_prompts, threads=2, build=build, use_cache=False)
    text_bytes = sum(len(t.encode("utf-8")) for t in three_prompts)
    for r in (s, g):
        assert math.isfinite(r.bpb) and 0.3 < r.bpb < 3
        assert r.bits_per_token > r.bpb  # a token spells more than one byte
    assert g.bytes == text_bytes  # Gemma adds BOS, so every byte of the text is predicted
    assert 0 < text_bytes - s.bytes <= 3 * 4  # SmolLM2 adds none: its first token per prompt is not
    # Measured on these three prompts (and on 20): the larger base model predicts Wikipedia text better.
    assert g.bpb < s.bpb
    again = selection.bits_per_byte(gemma, three_prompts, threads=2, build=build)
    assert again.bpb == pytest.approx(g.bpb, rel=1e-9)  # the cached result
    by_path = selection.bits_per_byte(resolve(str(gemma.path)), three_prompts, threads=2, build=build)
    assert by_path.model == str(gemma.path) and by_path.bpb == again.bpb  # the same file, named as asked


# --------------------------------------------------------------------------- cost on known values


@pytest.fixture
def assumptions() -> selection.CostAssumptions:
    # 100 W at 0.30/kWh is 0.03/h; 876 over one year at 24 h/day is 0.10/h
    return selection.CostAssumptions(
        electricity_price_kwh=0.30, power_w=100, hardware_price=876, lifetime_years=1, hours_per_day=24
    )


def test_cost_per_hour_and_per_token(assumptions) -> None:
    a = assumptions
    assert a.service_hours == 8760
    assert a.energy_per_hour == pytest.approx(0.03)
    assert a.hardware_per_hour == pytest.approx(0.10)
    assert selection.cost_per_million(100, a) == pytest.approx(0.13 / 360_000 * 1e6)  # 0.3611 per M
    assert selection.energy_per_million(100, a) == pytest.approx(0.083333, rel=1e-5)
    c = selection.local_cost(300, 100, a)
    assert c["CPIT per M"] == pytest.approx(0.120370, rel=1e-5)
    assert c["CPOT per M"] == pytest.approx(0.361111, rel=1e-5)
    assert c["blended per M"] == pytest.approx((3 * 0.120370 + 0.361111) / 4, rel=1e-5)
    # 3/300 + 1/100 s per 4 tokens = 5 ms a token; 2,628,000 s a month -> 525.6 M tokens
    assert c["capacity per month (M tokens)"] == pytest.approx(525.6)


def test_tco_blend_and_break_even(assumptions) -> None:
    t = selection.tco(assumptions)
    assert t["electricity"] == pytest.approx(262.8) and t["total"] == pytest.approx(1138.8)
    assert selection.blended(1.0, 5.0) == 2.0  # 3 input : 1 output
    assert selection.CLOUD_PRICES[3].model == "DeepSeek-V3"
    assert selection.CLOUD_PRICES[3].blended_per_m == pytest.approx((3 * 0.27 + 1.1) / 4)
    # 73 a month of hardware; cloud 1.00/M against 0.0833/M of electricity
    assert selection.break_even_tokens(73, 1 / 12, 1.0) == pytest.approx(73 / (11 / 12))
    assert selection.break_even_tokens(73, 1.0, 0.5) == math.inf
    with pytest.raises(UserError, match="HOURS_PER_DAY"):
        selection.CostAssumptions(0.3, 100, 876, 1, 25)
    with pytest.raises(UserError, match="POWER_W"):
        selection.CostAssumptions(0.3, -1, 876, 1, 8)


def test_licenses(smollm2, gemma) -> None:
    assert selection.candidate_license(smollm2)["kind"] == "permissive"
    g = selection.candidate_license(gemma)
    assert g["license"] == "Gemma Terms of Use" and g["kind"] == "custom"
    table = selection.licenses_table()
    assert len(table) == 6 and set(table["license"]) == {
        "custom",
        "MIT",
        "Apache 2.0",
        "Apache 2.0; custom for 3B and 72B",
    }
    assert "100 million" in table.loc["Alibaba", "in short"] and "Apache 2.0" in table.loc["Alibaba", "in short"]


# --------------------------------------------------------------------------- published hyperparameters


@pytest.mark.parametrize("which", ["smollm2", "gemma"])
def test_published_route_is_the_gguf_estimate(which, request) -> None:
    """Typed in from the model cards, the hyperparameters give the estimate read from the real file.

    Tolerance: weights, KV cache and compute buffer identical; the total may differ only by the
    estimated BPE merges (MERGE_BYTES each), which no card publishes.
    """
    from gguf import GGUFReader

    model = request.getfixturevalue(which)
    hp = next(hp for hp in selection.load_published() if hp.catalog == model.spec)
    from_file = selection.architecture(model)
    from_card = selection.published_architecture(hp, model.info.quant_type)
    # llama-quantize's choice of type, tensor by tensor, against the file
    file_types = {t.name: t.tensor_type.name for t in GGUFReader(model.path).tensors}
    card_types = {
        name: selection.tensor_type(name, shape, model.info.quant_type, hp) for name, shape in selection.tensors(hp)
    }
    assert card_types == file_types
    assert from_card.weight_bytes == from_file.weight_bytes
    assert selection.counted_parameters(hp) == model.info.parameters
    merges_gap = abs(from_card.merges - from_file.merges)
    assert merges_gap <= 0.01 * max(from_file.merges, 1) or from_file.merges == from_card.merges == 0
    for ctx in (2048, 8192, 32768):
        a = selection.estimate_memory(model, ctx, arch=from_file)
        b = selection.estimate_architecture(from_card, ctx, name=model.spec)
        assert (a.n_ctx, a.weights, a.kv, a.compute, a.output) == (b.n_ctx, b.weights, b.kv, b.compute, b.output)
        assert abs(b.total - a.total) == selection.MERGE_BYTES * merges_gap
    routes = selection.route_check([model], [2048, 32768])
    assert (routes["difference (bytes)"].abs() == selection.MERGE_BYTES * merges_gap).all()
    assert "reproduces the files' tensor bytes exactly and gives the same KV cache" in selection.route_sentence(routes)


def test_llama_fit_params_on_a_catalog_model(smollm2, build) -> None:
    """On this CPU-only build it fits nothing, but its log projects host memory: compare it part by part."""
    r = selection.llama_fit_params(smollm2, 2048, build=build, use_cache=False)
    assert r.stdout == "-c 2048 -ngl -1"  # no GPU: nothing to offload, the context as given
    total, model_mib, context_mib, compute_mib = r.host
    assert total == model_mib + context_mib + compute_mib == r.projected
    e = selection.estimate_memory(smollm2, 2048)
    assert model_mib == e.weights // MIB and context_mib == e.kv // MIB  # printed as whole MiB
    logits_512 = 4 * 49152 * 512 // MIB  # its compute reserves logits for every token of a 512-token batch
    assert compute_mib >= logits_512
    assert (
        selection.shown_command(r) == "llama-fit-params -m SmolLM2-135M-Instruct.Q4_1.gguf -c 2048 -np 1 -fa on -lv 4"
    )
    again = selection.llama_fit_params(smollm2, 2048, build=build)
    assert again == r  # cached by content
    table = selection.fit_params_table([smollm2], [2048], build=build)
    assert table["fit-params: projected total"].iloc[0] == r.projected
    with pytest.raises(UserError, match="must be positive"):
        selection.llama_fit_params(smollm2, 0, build=build)


def test_recommendation_puts_fit_first(smollm2, gemma, assumptions) -> None:
    # gemma at 32768 needs ~463 MiB: tight against 500 MiB; smollm2 (clipped to 8192) ~332 MiB fits
    quality = [
        selection.BitsPerByte(gemma.spec, 3, 100, 400, 350.0),
        selection.BitsPerByte(smollm2.spec, 3, 100, 400, 400.0),
    ]
    speeds = [
        {"model": gemma.spec, "pp_tps": 900.0, "tg_tps": 90.0},
        {"model": smollm2.spec, "pp_tps": 600.0, "tg_tps": 60.0},
    ]
    rec = selection.recommend([gemma, smollm2], [2048, 32768], 500 * MIB, quality, speeds, assumptions)
    assert list(rec["model"]) == [smollm2.spec, gemma.spec]
    assert list(rec["fit"]) == ["fits", "tight"]
    assert rec.loc[1, "context"] == 8192 and rec.loc[2, "context"] == 32768
    assert "best quality" in rec.loc[2, "reason"] and "fastest generation" in rec.loc[2, "reason"]
    roomy = selection.recommend([gemma, smollm2], [2048, 32768], 16 * 2**30, quality, speeds, assumptions)
    assert list(roomy["model"]) == [gemma.spec, smollm2.spec]  # both fit: better on every axis wins
    assert np.isfinite(roomy["blended cost (USD/M)"]).all()
