"""Try before you download on the real build: the synthetic spec resolves to the cached file, the
chapter's measuring functions run on a small synthetic model, the check of the method runs on a real
pair, and the sweep measures a synthetic spec for speed only (never quality), its rows kept apart on
the comparing page."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from localllms import compare, models, selection, sizes, store, sweep
from localllms.build import BuildInfo
from localllms.errors import UserError
from localllms.sizes import speed_only
from localllms.study import StudyConfig
from localllms.study.pipeline import RUN_KEY, TABLE

SMALL = "synth:smollm2-135m:Q4_K_M"


def test_a_synthetic_spec_resolves_to_the_cached_file(build: BuildInfo) -> None:
    first = models.resolve(SMALL)
    assert models.is_synthetic(first.path) and first.path.parent.name == "synth"
    assert first.info.quant_type == "Q4_K_M" and first.display == "smollm2-135m Q4_K_M"
    assert "synthetic weights: speed and memory only" in first.source
    mtime = first.path.stat().st_mtime_ns
    again = models.resolve("synth:SmolLM2-135M:q4_k_m")  # another spelling of the same file
    assert again.spec == SMALL and again.path == first.path and again.sha256 == first.sha256
    assert again.path.stat().st_mtime_ns == mtime  # reused, not written again


def test_the_study_refuses_a_synthetic_spec(build: BuildInfo) -> None:
    from localllms import study

    with pytest.raises(UserError, match="has synthetic weights .speed and memory only.; quality is never computed"):
        study.run(StudyConfig(model=SMALL, quant_types=("Q8_0",)), progress_bars=False)


def test_the_chapter_measures_a_small_synthetic_model(build: BuildInfo) -> None:
    files = sizes.make_files([SMALL], build, progress_bars=False)
    assert [f.spec for f in files] == [SMALL] and files[0].bytes_per_token > 0
    measured = sizes.measure(files, 2, 1, 16, 4, 64, [SMALL], build, progress_bars=False)
    table = sizes.speed_table(measured)
    assert table.loc[("SmolLM2-135M-Instruct", "Q4_K_M"), "generation tok/s, at 64"] != "not measured"
    share = sizes.roofline_share(measured, files[0])
    assert share.n == 1 and share.median > 0
    assert "Generation at Q4_K_M" in sizes.roofline_sentence(measured)
    assert "smollm2-135m Q4_K_M prompt" in sizes.depth_sentence(measured)
    assert len(sizes.roofline_table(measured)) == 1
    memory = selection.fit.measure_synthetic([SMALL], [1024], 1, 2, build)
    row = memory.iloc[0]
    assert row["model"] == "SmolLM2-135M-Instruct" and row["context"] == 1024
    assert row["measured peak (GiB)"] > 0 and math.isfinite(row["error (%)"])
    assert "synthetic weights: speed and memory only" in selection.fit.synthetic_error_sentence(memory)
    again = selection.fit.measure_synthetic([SMALL], [1024], 1, 2, build)  # cached: the same measurement
    assert again.iloc[0]["measured peak (GiB)"] == row["measured peak (GiB)"]


def test_the_check_runs_on_a_real_pair(build: BuildInfo) -> None:
    v = sizes.validate(["smollm2-135m-instruct"], ["Q8_0"], 2, 1, 16, 4, 1024, build, depth=64, progress_bars=False)
    assert len(v.pairs) == 1 and sizes.same_tensors(v.pairs[0])
    assert not models.is_synthetic(v.pairs[0].real.path) and models.is_synthetic(v.pairs[0].synthetic.path)
    assert set(v.memory) == {"smollm2-135m Q8_0: real", "smollm2-135m Q8_0: synthetic"}
    table = sizes.validation_table(v)
    assert table.loc[("smollm2-135m-instruct", "Q8_0"), "generation: within ±10 %"] == "no interval"  # one round
    assert ("smollm2-135m-instruct", "Q8_0, 64 tokens in the context") in table.index  # the filled-context run
    assert set(v.pair_rows["file"]) == {"smollm2-135m Q8_0", "smollm2-135m Q8_0 @ 64"}
    assert set(v.pooled_rows["file"]) == {sizes.POOLED}  # the pair and its filled context, pooled
    assert v.outcome == sizes.UNDECIDED and not v.holds and not v.holds_pooled  # one round decides nothing
    assert sizes.validation_sentence(v).startswith("Not decided: 1 rounds are too few for intervals that hold "
                                                   "together over 6 comparisons")  # fmt: skip
    assert "6 speed comparisons" in v.describe() and "need 7" in v.describe()


def test_a_synthetic_spec_gets_speed_rows_only(build: BuildInfo, tmp_path: Path) -> None:
    config = StudyConfig(model="synth:smollm2-135m", quant_types=("Q4_K_M", "Q8_0"), rounds=1, n_prompt=16, n_gen=4,
                         threads=2)  # fmt: skip
    probe = speed_only.probe(config)
    assert probe["labels"] == ["Q4_K_M", "Q8_0"] and probe["reference"] is None
    rows = speed_only.study(config, {"hostname": "here", "host_study_slots": 1}, progress_bars=False)
    assert list(rows["quant"]) == ["Q4_K_M", "Q8_0"] and rows["synthetic"].all()
    assert rows["bpb"].isna().all() and (rows["tg_tps"] > 0).all() and (rows["model"] == "synth:smollm2-135m").all()
    store_path = tmp_path / "results.duckdb"
    store.save(TABLE, rows, RUN_KEY, store_path)
    stored = sweep.stored_rows(store_path)
    values = {"model_sha256": probe["sha256"], "threads": 2, "corpus": probe["corpus"]}
    assert sweep.already_stored(stored, values, probe["labels"])  # a rerun skips it
    df = compare.load(config, store_path)
    q = compare.quality_table(df)
    name = "synth:smollm2-135m (synthetic weights: speed and memory only)"
    assert q.loc[(name, "Q8_0"), "Bits per byte"] == "" and q.loc[(name, "Q8_0"), "Size (MiB)"] > 0
    assert len(compare.synthetic_table(df)) == 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sweep_of_a_synthetic_spec_measures_speed_on_a_cluster(build: BuildInfo, tmp_path: Path) -> None:
    config = StudyConfig(quant_types=("Q4_K_M",), rounds=1, n_prompt=16, n_gen=4, threads=2)
    result = sweep.run([SMALL], config, workers=1, store_path=tmp_path / "results.duckdb", progress_bars=False)
    assert [o.status for o in result.outcomes] == ["done"], result.outcomes
    assert result.rows["synthetic"].all() and result.rows["bpb"].isna().all()
    again = sweep.run([SMALL], config, workers=1, store_path=tmp_path / "results.duckdb", progress_bars=False)
    assert [o.status for o in again.outcomes] == ["skipped"]
