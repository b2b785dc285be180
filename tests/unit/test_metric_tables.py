"""A quality metric is declared once (one ``Metric(...)`` in ``metrics.METRICS``): the summary, the
CSV row and every table it is tagged for follow (pure: synthetic token records, no model)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

import localllms.__main__ as cli
from localllms import compare, evaluate, metrics, provenance, study
from localllms.study import across, importance, kvcache


def _parts(seed: int, scale: float, n_prompts: int = 4) -> list[metrics.TokenStats]:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n_prompts):
        n = int(rng.integers(20, 40))
        nb = rng.uniform(0.1, 5, n)
        parts.append(metrics.TokenStats(nb, nb + scale * rng.normal(0.05, 0.3, n), scale * rng.exponential(0.05, n),
                                        rng.uniform(size=n) > 0.15 * scale))  # fmt: skip
    return parts


def _worst_nll(s: metrics.Sample) -> float:
    return float(s.tokens.nll_q.max())


def _worst_nll_se(s: metrics.Sample) -> float:
    return 0.25


def _study_rows(per_variant: dict[str, list[metrics.TokenStats]]) -> pd.DataFrame:
    """Rows as the study pipeline writes them: the file's columns, speeds and every metric."""
    rows = []
    for i, (quant, parts) in enumerate(per_variant.items()):
        speeds = {f"{t}{k}": v for t in ("pp", "tg") for k, v in (("_tps", 100.0 + i), ("_lo", 90.0), ("_hi", 110.0))}
        rows.append({"quant": quant, "reference_label": "F16", "size_mib": 100.0 + i, "bpw": 4.0 + i, **speeds,
                     "tg_vs_ref": 1.5, "tg_vs_ref_lo": 1.4, "tg_vs_ref_hi": 1.6, **metrics.summarize(parts)})  # fmt: skip
    return pd.DataFrame(rows)


def test_a_metric_is_one_declaration(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Add one Metric(...) (with its se partner) tagged for every table of metrics: it is in the
    summary and in each table, under the heading, rounding and place its tags declare."""
    worst = metrics.Metric(
        "worst_nll",
        "Worst NLL",
        _worst_nll,
        3,
        se="worst_nll_se",
        tables=(metrics.QUALITY, metrics.COMPARING, metrics.CLI, metrics.KV_CACHE, metrics.TWO_MODELS,
                metrics.Column(metrics.CASE_STUDY, "Worst NLL (± se)", with_se=True),
                metrics.Column(metrics.TAIL, order=9), metrics.Column(metrics.IMATRIX, "Worst NLL {}")),
    )  # fmt: skip
    registry = (*metrics.METRICS, worst, metrics.Metric("worst_nll_se", "Worst NLL se", _worst_nll_se, 3))
    monkeypatch.setattr(metrics, "METRICS", registry)
    monkeypatch.setattr(metrics, "BY_NAME", {m.name: m for m in registry})

    per_variant = {"F16": _parts(0, 0.0), "Q4_K_M": _parts(1, 0.5), "Q8_0": _parts(2, 0.1)}
    summary = metrics.summarize(per_variant["Q4_K_M"])
    value = summary["worst_nll"]
    assert value == _worst_nll(metrics.Sample(per_variant["Q4_K_M"])) and summary["worst_nll_se"] == 0.25
    assert metrics.BY_NAME["worst_nll"].digits == 3

    df = _study_rows(per_variant)  # the CSV row holds it, so every table of the case study can read it
    assert study.quality_table(df).loc["Q4_K_M", "Worst NLL"] == round(value, 3)
    assert study.case_study_table(df).loc["Q4_K_M", "Worst NLL (± se)"] == f"{value:.3f} ± 0.250"
    tail = study.tail_table(df)
    assert tail.columns[-1] == "Worst NLL" and tail.loc["Q4_K_M", "Worst NLL"] == round(value, 3)
    assert ("worst_nll", "Worst NLL", 3) in compare.quality_columns()

    # the reference with a quantized KV cache: the f16 row is the identical variant's value
    kv_per_prompt = {kvcache.label("q8_0"): per_variant["Q4_K_M"]}
    monkeypatch.setattr(kvcache, "first_prompts", lambda st, n: ["text"] * 4)
    monkeypatch.setattr(kvcache.evaluate, "evaluate_prompts", lambda *a: evaluate.PromptEvaluation(kv_per_prompt))
    monkeypatch.setattr(kvcache.memory, "architecture", lambda ref: None)
    monkeypatch.setattr(kvcache.memory, "kv_bytes", lambda arch, n, cache_bytes=2.0: int(n * 1000 * cache_bytes))
    kv = kvcache.run(NS(reference=NS(label="F16"), threads=1, build=None), ["f16", "q8_0"]).table
    assert kv.columns[-1] == "Worst NLL" and kv.loc["q8_0", "Worst NLL"] == round(value, 3)
    assert kv.loc["f16", "Worst NLL"] == round(metrics.identical()["worst_nll"], 3)

    # two models side by side
    st = NS(rows=df, evaluation=NS(per_prompt=per_variant), model=NS(spec="m"))
    side = across.side_by_side([st], [None], 4)
    assert side.loc[("m", "Q4_K_M"), "Worst NLL"] == round(value, 3)

    # with and without an importance matrix
    rows = [{"type": "Q4_K_M", "imatrix": flag, "bpw": 4.5, "mix": "Q4_K ×30", "prompt_kld": [0.1, 0.2, 0.1, 0.2],
             **metrics.summarize(per_variant[q])} for flag, q in ((False, "Q4_K_M"), (True, "Q8_0"))]  # fmt: skip
    res = importance.ImportanceStudy(None, ["Q4_K_M"], [], {}, None, pd.DataFrame(rows))  # type: ignore[arg-type]
    gain = importance.gain_table(res, pd.DataFrame({"quant": [], "imatrix": [], "kld_mean": []}))
    assert gain.loc["Q4_K_M", "Worst NLL without"] == round(value, 3)
    assert gain.loc["Q4_K_M", "Worst NLL with"] == round(metrics.summarize(per_variant["Q8_0"])["worst_nll"], 3)

    # the CLI's parseable line per variant
    monkeypatch.setattr(cli, "_study_config", lambda args, **model: NS(n_threads=1))
    monkeypatch.setattr(provenance, "line", lambda *a: "")
    monkeypatch.setattr(study, "run", lambda config: NS(rows=df, build=None, model=None, reference=NS(label="F16"),
                                                        prompts=NS(source=NS(name="p")), csv="x.csv"))  # fmt: skip
    cli.cmd_study(NS(json=False, model="m"))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("study: quant=Q4_K_M "))
    assert f" worst_nll={value:.3f} " in line


def test_the_imatrix_gain_is_the_metric_the_registry_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gain table's change and its standard error follow ``Column.change`` alone: declared on the
    same-top share instead of the KLD, the table shows that share's change and no KLD change."""
    kld = {"Q4_K_M": _parts(1, 0.5), "Q8_0": _parts(2, 0.1)}
    assert importance.per_prompt(kld["Q4_K_M"]) == {"prompt_kld": [float(np.mean(p.kld)) for p in kld["Q4_K_M"]]}

    same_top = metrics.Change("Same top change (%)", "Same top ± se (%)", "prompt_same_top")

    def moved(m: metrics.Metric) -> metrics.Metric:
        change = same_top if m.name == "same_top_pct" else None
        tables = tuple(dataclasses.replace(c, change=change) if isinstance(c, metrics.Column) and c.table == metrics.IMATRIX
                       else c for c in m.tables)  # fmt: skip
        return dataclasses.replace(m, tables=tables)

    registry = tuple(moved(m) for m in metrics.METRICS)
    monkeypatch.setattr(metrics, "METRICS", registry)
    monkeypatch.setattr(metrics, "BY_NAME", {m.name: m for m in registry})
    rows = [{"type": "Q4_K_M", "imatrix": flag, "bpw": 4.5, "mix": "Q4_K ×30", **importance.per_prompt(kld[q]),
             **metrics.summarize(kld[q])} for flag, q in ((False, "Q4_K_M"), (True, "Q8_0"))]  # fmt: skip
    assert "prompt_same_top" in rows[0] and "prompt_kld" not in rows[0]
    res = importance.ImportanceStudy(None, ["Q4_K_M"], [], {}, None, pd.DataFrame(rows))  # type: ignore[arg-type]
    gain = importance.gain_table(res, pd.DataFrame({"quant": [], "imatrix": [], "kld_mean": []}))
    assert "KLD change (%)" not in gain.columns and "± se (%)" not in gain.columns
    headings = list(gain.columns)
    assert headings[headings.index("Same top with (%)") + 1 :][:2] == ["Same top change (%)", "Same top ± se (%)"]
    wo, w = rows[0], rows[1]
    row = gain.loc["Q4_K_M"]
    assert row["Same top change (%)"] == round(100 * (w["same_top_pct"] / wo["same_top_pct"] - 1), 1)
    se = importance.gain_se(wo["prompt_same_top"], w["prompt_same_top"])
    assert row["Same top ± se (%)"] == round(se, 1)


def test_tags_are_tables_and_every_mean_se_has_its_partner() -> None:
    for table in metrics.TABLES:
        shown = metrics.columns(table)  # raises on a tag that is no table or a ± without its se
        headings = [c.heading for c in shown]
        assert len(headings) == len(set(headings)), f"two columns of the {table} table share a heading"
        assert all(c.se in metrics.BY_NAME for c in shown if c.se)
    with pytest.raises(ValueError, match="not a table of metrics"):
        metrics.columns("no such table")
    assert [c.heading for c in metrics.columns(metrics.TAIL)][:3] == ["Δp mean ± se (%)", "Δp min (%)", "Δp p1 (%)"]
    assert metrics.columns(metrics.TAIL)[-1].name == "kld_max"  # the tail's order, not the registry's


def test_an_identical_variant_scores_as_its_reference() -> None:
    same = metrics.identical()
    assert same["kld_mean"] == same["kld_p99"] == same["dp_mean_pct"] == same["dp_rms_pct"] == 0.0
    assert same["same_top_pct"] == 100.0 and same["ppl_ratio_pct"] == 0.0 and same["ppl_q"] == same["ppl_base"]
