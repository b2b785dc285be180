"""The sweep's rules and the comparison page's tables, on rows made here (no build, no model, no cluster)."""

from __future__ import annotations

import pandas as pd
import pytest

from localllms import compare, defaults, sweep, sweep_rules
from localllms.errors import UserError
from localllms.study import StudyConfig


def test_the_concurrency_rule_keeps_studies_times_threads_within_the_cores() -> None:
    for cores in range(1, 17):
        for threads in range(1, 17):
            n = sweep.study_slots(cores, threads)
            assert n >= 1  # a host always runs something
            assert n * threads <= cores or n == 1  # never oversubscribed, unless one study alone is
            assert (n + 1) * threads > cores  # and no slot left unused
    assert sweep.study_slots(2, 2) == 1  # this book's machine with every core per study: one at a time


def test_only_names_wrong_on_every_machine_are_refused_before_a_cluster() -> None:
    assert sweep_rules.spec_problem("gemma-3-270m") is None  # a catalog name
    assert sweep_rules.spec_problem("/models/not-here.gguf") is None  # a path: its machine's probe decides
    assert sweep_rules.spec_problem("owner/repo:file.gguf") is None  # a hub file
    assert "Unknown model" in sweep_rules.spec_problem("gemma-3-27m")


def test_bad_sweep_input_is_one_sentence_before_any_cluster_starts() -> None:
    one_thread = StudyConfig(threads=1)
    cases = [
        ([], {}, "MODELS is empty"),
        (["a", "b", "a"], {}, "more than once"),
        (["smollm2-135m-instruct", "smollm-nope"], {}, "Unknown model 'smollm-nope'"),
        (["owner/repo:weights.bin"], {}, "not a hub file spec"),
        (["a.gguf"], {"workers": 0}, "whole number"),
        (["a.gguf"], {"workers": defaults.cores() + 1}, "at most"),
        (["a.gguf"], {"scheduler": "tcp://127.0.0.1:1", "workers": 1}, "sizes a LocalCluster"),
    ]
    for models, kwargs, words in cases:
        with pytest.raises(UserError, match=words):
            sweep.run(models, one_thread, **kwargs)


def _rows(**over: object) -> dict:
    row = {
        "model": "m1", "quant": "Q4_K_M", "reference_label": "F16 expanded from Q4_1", "model_sha256": "aa",
        "cpu": "CPU", "llama_cpp_commit": "c", "build_key": "k", "cpu_features": "avx2", "threads": 2, "cores": 2,
        "n_prompts": 20, "min_prompt_length": 100, "max_prompt_length": 1000, "corpus": "wikipedia-leads-en",
        "rounds": 5, "n_prompt": 64, "n_gen": 16, "size_mib": 100.0, "bpw": 5.0, "bpb": 1.0,
        "ppl_ratio_pct": 1.0, "kld_mean": 0.01, "kld_p99": 0.1, "same_top_pct": 95.0, "pp_tps": 100.0, "pp_lo": 99.0,
        "pp_hi": 101.0, "tg_tps": 20.0, "tg_lo": 19.5, "tg_hi": 20.5, "tg_vs_ref": 1.2, "tg_vs_ref_lo": 1.1,
        "tg_vs_ref_hi": 1.3, "hostname": "h1", "host_study_slots": 1,
    }  # fmt: skip
    return row | over


def test_a_study_is_skipped_only_when_every_file_is_stored_with_bits_per_byte() -> None:
    ref = "F16 expanded from Q4_1"
    stored = pd.DataFrame([_rows(quant=ref), _rows(quant="Q4_K_M"), _rows(quant="Q8_0", bpb=None)])
    key = {k: stored[k].iloc[0] for k in ("model_sha256", "cpu", "build_key", "threads", "n_prompts", "corpus")}
    assert sweep.already_stored(stored, key, [ref, "Q4_K_M"])
    assert not sweep.already_stored(stored, key, [ref, "Q4_K_M", "Q8_0"])  # Q8_0 lacks bits per byte
    assert not sweep.already_stored(stored, key, [ref, "Q2_K"])  # a type not run yet
    assert not sweep.already_stored(stored, key | {"threads": 1}, [ref, "Q4_K_M"])  # other parameters
    assert not sweep.already_stored(stored, key | {"build_key": "other"}, [ref])  # another machine's build
    assert not sweep.already_stored(stored.drop(columns="bpb"), key, [ref])  # rows of a study, not a sweep


def _two_models(machines: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for host, over in machines.items():
        rows += [
            _rows(model="small", quant="ref-s", reference_label="ref-s", size_mib=200.0, bpb=1.00, hostname=host),
            _rows(model="small", quant="Q4_K_M", reference_label="ref-s", size_mib=80.0, bpb=1.05, hostname=host),
            _rows(model="big", quant="ref-b", reference_label="ref-b", size_mib=500.0, bpb=0.90, hostname=host),
            _rows(model="big", quant="Q4_K_M", reference_label="ref-b", size_mib=190.0, bpb=0.92, hostname=host),
        ]
        rows[-4:] = [r | over for r in rows[-4:]]
    return compare.prepare(pd.DataFrame(rows), ["small", "big"])


def test_the_front_and_its_sentence_follow_the_rows() -> None:
    df = _two_models({"h1": {}})
    # small's F16 reference (200 MiB, 1.00) is beaten by big's Q4_K_M (190 MiB, 0.92)
    assert compare.pareto_front(df) == [("small", "Q4_K_M"), ("big", "Q4_K_M"), ("big", "ref-b")]
    table = compare.quality_table(df)
    assert table.loc[("small", "ref-s"), "Pareto front"] == ""
    assert table.loc[("big", "Q4_K_M"), "Pareto front"] == "yes"
    text = compare.reading(df)
    assert text.startswith("The Pareto front, smallest first: small Q4_K_M (80.0 MiB, 1.050 bits per byte)")
    assert "The other file of the 4 is beaten" in text


def test_quality_is_one_row_per_file_and_speed_one_column_per_machine() -> None:
    df = _two_models({"h1": {}, "h2": {"tg_tps": 40.0, "tg_lo": 38.0, "tg_hi": 41.0}})
    assert len(compare.quality_table(df)) == 4  # not repeated per machine
    speed = compare.speed_table(df)
    assert [c for c in speed.columns if "generation (tok/s)" in c] == [
        "h1 (CPU, 2 cores): generation (tok/s)",
        "h2 (CPU, 2 cores): generation (tok/s)",
    ]
    first = speed.iloc[0]
    assert first["h2 (CPU, 2 cores): generation (tok/s)"] == "40.0 (38.0–41.0)"
    assert first["h1 (CPU, 2 cores): generation (tok/s)"] == "20.0 (19.5–20.5)"
    vs = speed["h1 (CPU, 2 cores): generation vs reference"]
    refs = set(df["reference_label"])
    assert all((v == "—") == (quant in refs) for (_, quant), v in vs.items())
    assert "×1.20 (1.10–1.30)" in set(vs)


def test_machines_with_the_same_build_are_checked_for_agreement() -> None:
    same = _two_models({"h1": {}, "h2": {}})
    assert "agrees exactly" in compare.agreement_sentence(same)
    off = _two_models({"h1": {}, "h2": {"kld_mean": 0.0125}})
    assert "KLD mean by up to 0.0025" in compare.agreement_sentence(off)
    other_build = _two_models({"h1": {}, "h2": {"build_key": "k2", "kld_mean": 0.5}})
    assert "no two share a llama.cpp build" in compare.agreement_sentence(other_build)
    assert "one machine only" in compare.agreement_sentence(_two_models({"h1": {}}))
    both = _two_models({"h1": {}, "h2": {}})  # same build, but each machine measured another model
    apart = both[((both["machine"] == both["machine"].iloc[0]) == (both["model"] == both["model"].iloc[0]))]
    assert apart["machine"].nunique() == 2 and "measured no file in common" in compare.agreement_sentence(apart)


def test_the_references_sentence_names_each_models_reference_from_the_rows() -> None:
    text = compare.references(_two_models({"h1": {}}))
    assert text.endswith("from the store: small: ref-s; big: ref-b.")
