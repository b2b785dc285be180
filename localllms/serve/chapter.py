"""The serving chapter's calls: what its sections share, and one call per section.

The notebook sets the parameters, calls these and shows what they return. It never chooses between
chat and text completion: the model does. A model whose GGUF carries a chat template is asked the
chapter's question as a chat (``/v1/chat/completions``, ``create_chat_completion``, llama-cli's
chat turn); a base model gets the same question as text to continue (``/v1/completions``,
``create_completion``, llama-cli with a pass-through template). ``ask`` does this for one request,
:class:`Chapter` for every section.

* :class:`OpenLoop`: the open-loop parameters, checked when made.
* :class:`Chapter`: the model, build, threads, workload and service target of one run; it keeps
  every command it ran (``commands_table``), what ran (``ran_table``) and the per-request records
  for the results store (``save_records``). Each section's call returns a small result with its
  table and its reading: :class:`LatencyRun`, :class:`CacheRun`, :class:`ClosedLoop`,
  :class:`OptionsRun`, :class:`StructuredRun`, :class:`OtherRuntimes`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import corpus, defaults
from ..build import BuildInfo, current_build, use_build_for_binding
from ..errors import UserError
from ..models import ResolvedModel, resolve
from . import capacity, runtimes, structured
from . import records as store_records
from .clients import (
    CHAT_SYSTEM,
    CHAT_USER,
    COMPLETION_PROMPT,
    SEED,
    ChatResult,
    as_endpoint,
    chat_openai,
    chat_requests,
    completion_openai,
    completion_requests,
)
from .load import load_test
from .loadgen import RateSearchResult, check_open_loop, rate_search, sequential_latency
from .options import compare_options
from .options_reading import options_reading, options_table
from .process import LlamaServer, ManagedServer, shell_line
from .prompt_cache import check_lengths, prompt_cache_reading, prompt_cache_sweep, prompt_cache_table
from .stats import ServiceTarget, latency_reading, latency_table
from .streaming import latency_summary, measure_latency
from .webui import ScreenshotResult, screenshot
from .workload import Workload, corpus_workload

if TYPE_CHECKING:
    import pandas as pd

CLIENTS = ("requests", "openai")


def ask(target: ManagedServer, client: str = "requests", max_tokens: int = 64) -> ChatResult:
    """The chapter's question through ``client`` ("requests" or "openai"): a chat request when the served
    model has a chat template, else the same question as text to continue (``/v1/completions``)."""
    if client not in CLIENTS:
        raise UserError(f"client must be one of {', '.join(CLIENTS)}, not {client!r}.")
    if as_endpoint(target).chat_template:
        call = chat_requests if client == "requests" else chat_openai
        return call(target, max_tokens=max_tokens)
    call = completion_requests if client == "requests" else completion_openai
    return call(target, COMPLETION_PROMPT, max_tokens=max_tokens)


def load_average() -> str:
    """The machine's load over the last minute: other work slows every measurement."""
    return f"load average over the last minute: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


@dataclass(frozen=True)
class OpenLoop:
    """The open-loop parameters: the rate search and the server-options runs (checked when made)."""

    start_rate: float = defaults.RATE_START
    requests_per_rate: int = defaults.REQUESTS_PER_RATE
    max_probes: int = defaults.MAX_PROBES
    tolerance: float = defaults.RATE_TOLERANCE
    parallel: int = defaults.PARALLEL

    def __post_init__(self) -> None:
        check_open_loop(self.start_rate, self.requests_per_rate, self.max_probes, self.tolerance, self.parallel)


# =========================================================================== the sections' results


@dataclass
class LatencyRun:
    """Sequential streamed requests: every record, the measured ones, their percentiles."""

    records: pd.DataFrame
    requested: int
    budget_s: float
    endpoint: str

    @property
    def measured(self) -> pd.DataFrame:
        return self.records[~self.records["warmup"] & self.records["ok"]]

    @property
    def table(self) -> pd.DataFrame:
        return latency_table(self.measured)

    @property
    def tpot_median(self) -> float:
        """The median time per output token: the pace of an answer."""
        return float(self.measured["tpot_ms"].median())

    def summary(self) -> str:
        r = self.records
        return (
            f"{len(self.measured)} requests measured after {int(r['warmup'].sum())} warm-up requests (excluded), "
            f"{int((~r['ok']).sum())} failed; endpoint {self.endpoint}"
        )

    def reading(self) -> str:
        return latency_reading(self.records, self.table, self.requested, self.budget_s)

    def per_request(self) -> pd.DataFrame:
        """One row per measured request: prompt length, TTFT, TPOT, end to end, its longest gap."""
        m = self.measured
        cols = ["request", "prompt_tokens", "ttft_ms", "tpot_ms", "e2e_ms", "max_gap_ms"]
        return m.assign(max_gap_ms=m["itl_ms"].map(max))[cols].set_index("request")


@dataclass
class CacheRun:
    """TTFT by prompt length, with and without the prompt cache."""

    records: pd.DataFrame

    @property
    def table(self) -> pd.DataFrame:
        return prompt_cache_table(self.records)

    def reading(self, tpot_ms: float, max_tokens: int) -> str:
        return prompt_cache_reading(self.table, tpot_ms, max_tokens)


@dataclass
class ClosedLoop:
    """The closed-loop levels (one row each) and every request of them."""

    levels: pd.DataFrame
    requests: pd.DataFrame

    def summary(self) -> str:
        lv = self.levels
        return (
            f"failed requests: {int(lv['failed'].sum())} of {int(lv['requests'].sum())}\n"
            f"server healthy after every level: {bool(lv['healthy_after'].all())}"
        )


@dataclass
class OptionsRun:
    """The same open-loop run against each server configuration."""

    rate: float
    results: list[dict]

    @property
    def table(self) -> pd.DataFrame:
        return options_table(self.results)

    def reading(self) -> str:
        return options_reading(self.table, self.rate)


SKIPPED_STRUCTURED = "skipped: structured output needs a chat model (an instruction to follow); this model has none"


@dataclass
class StructuredRun:
    """The structured-output replies (None for a base model: there is no instruction to follow)."""

    replies: pd.DataFrame | None
    max_tokens: int

    def _or_note(self, make) -> Any:
        import pandas as pd

        return make() if self.replies is not None else pd.DataFrame({"note": [SKIPPED_STRUCTURED]})

    def validity_table(self) -> pd.DataFrame:
        return self._or_note(lambda: structured.validity_table(self.replies, digits=2))

    def failure_table(self) -> pd.DataFrame:
        return self._or_note(lambda: structured.failure_table(self.replies, self.max_tokens))

    def reading(self) -> str:
        return structured.structured_reading(self.replies) if self.replies is not None else SKIPPED_STRUCTURED

    def first_replies(self) -> str:
        """What the model wrote for the first request in each mode, with its checks."""
        if self.replies is None:
            return SKIPPED_STRUCTURED
        first = next(iter(structured.EXTRACTION_PROMPTS))
        out = [f"request: {first}"]
        for row in self.replies[self.replies["prompt"] == first].itertuples():
            out.append(
                f"\n{row.mode} (parses: {row.parses}, valid: {row.valid}, finish: {row.finish_reason}, "
                f"{row.completion_tokens} tokens{'; ' + row.reason if row.reason else ''})\n{row.reply}"
            )
        return "\n".join(out)


@dataclass
class OtherRuntimes:
    """Ollama and llamafile as found here, and what was measured on them (nothing when absent)."""

    ollama: runtimes.ToolStatus
    llamafile: runtimes.ToolStatus
    measured: dict[str, dict] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def status_table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([asdict(self.ollama), asdict(self.llamafile)]).set_index("tool")

    def summary(self) -> str:
        return "\n".join(self.lines)


# =========================================================================== the chapter


@dataclass
class Chapter:
    """One run of the serving chapter: what its sections share, and what they ran."""

    model: ResolvedModel
    build: BuildInfo
    threads: int
    texts: tuple[str, ...]
    workload: Workload
    target: ServiceTarget
    open_loop: OpenLoop
    lengths: list[int]
    commands: dict[str, str] = field(default_factory=dict)
    ran: dict[str, str] = field(default_factory=dict)
    experiments: dict[str, tuple[pd.DataFrame, dict]] = field(default_factory=dict)

    @classmethod
    def setup(
        cls,
        model: str,
        threads: int,
        max_tokens: int = defaults.MAX_TOKENS,
        prompt_lengths: Sequence[int] = defaults.PROMPT_LENGTHS,
        target: ServiceTarget | None = None,
        open_loop: OpenLoop | None = None,
    ) -> Chapter:
        """Check the parameters (one sentence for a bad one, before any server starts), then resolve the
        model, point the binding at this build and select the prompts corpus the workload is made of."""
        lengths = check_lengths(prompt_lengths)
        target = target or ServiceTarget()
        open_loop = open_loop or OpenLoop()
        build = use_build_for_binding(current_build())  # the binding must load this build's libllama
        resolved = resolve(model)
        texts = tuple(corpus.build_prompts(source=defaults.CORPUS_SOURCE).texts)  # the case study's prompts
        workload = corpus_workload(resolved, texts, max_tokens)
        return cls(resolved, build, threads, texts, workload, target, open_loop, lengths)

    @property
    def chat(self) -> bool:
        """Whether the model has a chat template (else every request is a text completion)."""
        return bool(self.model.info.chat_template)

    def _as(self, chat: str, base: str) -> str:
        return chat if self.chat else base

    def describe_model(self) -> str:
        """The model as its GGUF header describes it, and, for a base model, what changes in the chapter."""
        info = self.model.info
        text = (
            f"{info.name}: {info.architecture}, {info.parameters:,} parameters, {info.quant_type}, "
            f"{info.file_size / 2**20:.1f} MiB, trained context {info.context_length} tokens, "
            f"chat template: {self._as('yes', 'no')}"
        )
        if not self.chat:
            text += (
                "\n\nA base model: it is served through /v1/completions (plain text in, text out) wherever the "
                "chapter uses chat with an instruction-tuned model, so the latency, prompt-cache, load and option "
                "measurements and the llama-cli and binding runs all still run. The structured-output section needs "
                "a chat model (an instruction to follow) and is skipped, as are the question typed into the web UI "
                "and the chat with Ollama or llamafile."
            )
        return text

    # ----------------------------------------------------------------------- the server and its clients

    def start_server(self) -> LlamaServer:
        """The chapter's own server: one slot, for the first requests and the structured output (a reply of
        up to 128 tokens may take minutes on a busy machine: the timeout is generous; a dead server is still
        reported within seconds)."""
        server = LlamaServer(self.model, threads=self.threads, parallel=1, request_timeout=600, build=self.build)
        server.start()
        self.commands["chapter server (1 slot)"] = server.command_line()
        self.ran["llama-server: started, ready on /health, stopped"] = "ran"
        return server

    def ask(self, server: ManagedServer, client: str = "requests") -> ChatResult:
        """The chapter's question through ``client`` (see :func:`ask`), ``MAX_TOKENS`` tokens long."""
        self.ran["OpenAI-compatible requests via requests and openai"] = self._as(
            "ran (chat)", "ran as text completions: no chat template"
        )
        return ask(server, client, self.workload.max_tokens)

    # ----------------------------------------------------------------------- measurements

    def _measured(self, name: str, records: pd.DataFrame, params: dict) -> None:
        self.experiments[name] = (records, params)
        self.ran["latency distributions, prompt length x cache, closed- and open-loop load, server options"] = self._as(
            "ran", "ran as text completions: no chat template"
        )

    def sequential_latency(self, n_requests: int, warmup: int, budget_s: float = 300.0) -> LatencyRun:
        """``n_requests`` streamed requests of the workload one after another (after ``warmup``), on a fresh
        one-slot server; no request after ``budget_s``."""
        import pandas as pd

        got = sequential_latency(
            self.model,
            self.workload,
            n_requests,
            warmup,
            threads=self.threads,
            time_budget_s=budget_s,
            build=self.build,
        )
        self.commands["sequential latency (1 slot)"] = got["command"]
        records = pd.DataFrame(got["records"])
        self._measured(
            "sequential_latency", records, {"n_requests": n_requests, "warmup": warmup, **self.workload.identity()}
        )
        return LatencyRun(records, n_requests, budget_s, self.workload.endpoint)

    def prompt_cache(self, repeats: int) -> CacheRun:
        """TTFT for each prompt length, with and without the cache, ``repeats`` requests each."""
        import pandas as pd

        got = prompt_cache_sweep(self.model, self.texts, self.lengths, repeats, threads=self.threads, build=self.build)
        self.commands["prompt length x cache (1 slot)"] = got["command"]
        records = pd.DataFrame(got["records"])
        self._measured("prompt_cache", records, {"lengths": self.lengths, "repeats": repeats})
        return CacheRun(records)

    def closed_loop(self, concurrency: Sequence[int], requests_per_client: int, budget_s: float = 120.0) -> ClosedLoop:
        """For each level c, a fresh server with c slots and c clients sending back to back."""
        levels, per_request = load_test(
            self.model,
            concurrency,
            requests_per_client=requests_per_client,
            max_tokens=self.workload.max_tokens,
            threads=self.threads,
            time_budget_s=budget_s,
            build=self.build,
        )
        for c, cmd in per_request.groupby("clients")["command"].first().items():
            self.commands[f"closed loop, {c} clients ({c} slots)"] = cmd
        params = {"concurrency": list(concurrency), "requests_per_client": requests_per_client}
        self._measured("closed_loop", per_request, params)
        return ClosedLoop(levels, per_request)

    def rate_search(self, warmup: int) -> RateSearchResult:
        """The highest Poisson arrival rate that meets the target (the open-loop parameters of :meth:`setup`)."""
        o = self.open_loop
        searched = rate_search(
            self.model, self.workload, self.target, o.start_rate, o.requests_per_rate, o.max_probes, o.tolerance,
            o.parallel, warmup, threads=self.threads, build=self.build,
        )  # fmt: skip
        self.commands[f"open loop, rate search ({o.parallel} slots)"] = searched.command
        params = {"parallel": o.parallel, "requests_per_rate": o.requests_per_rate, "target": asdict(self.target)}
        self._measured("rate_search", searched.records(), {**params, **self.workload.identity()})
        return searched

    def compare_options(self, searched: RateSearchResult, warmup: int) -> OptionsRun:
        """The search's run, again against each server configuration, at the lowest rate that missed the
        target (or the highest probed, if none did): where the options decide whether it is met."""
        import pandas as pd

        o = self.open_loop
        rate = searched.search.lowest_failing or searched.search.highest_passing or o.start_rate
        results = compare_options(
            self.model, self.workload, self.target, rate, o.requests_per_rate, warmup=warmup, threads=self.threads,
            searched=searched, build=self.build,
        )  # fmt: skip
        for r in results:
            self.commands[f"options: {r['label']}"] = r["command"]
        records = pd.DataFrame([{"config": r["label"], **row} for r in results for row in r["records"]])
        params = {"rate": rate, "target": asdict(self.target), **self.workload.identity()}
        self._measured("server_options", records, params)
        return OptionsRun(rate, results)

    def save_records(self) -> str:
        """Every request measured so far into the results store, with provenance; what was written, in a line."""
        from .. import store

        written = {
            name: len(store_records.save_records(df, name, params, self.model, self.build, self.threads))
            for name, (df, params) in self.experiments.items()
        }
        return f"rows written to {store_records.TABLE} in {store.STORE.name}: {written}"

    # ----------------------------------------------------------------------- structured output

    def structured_output(self, server: ManagedServer, max_tokens: int) -> StructuredRun:
        """The extraction requests in every mode (a chat model only: a base model has no instruction to follow)."""
        if not self.chat:
            self.ran["structured output"] = "skipped: needs a chat model"
            return StructuredRun(None, max_tokens)
        replies = structured.structured_output(server, max_tokens=max_tokens, build=self.build)
        self.ran["structured output"] = "ran"
        return StructuredRun(replies, max_tokens)

    # ----------------------------------------------------------------------- the other ways to run it

    def cli_turn(self) -> runtimes.CliResult:
        """The chapter's question as one llama-cli turn (a base model continues the text instead)."""
        prompt, system = (CHAT_USER, CHAT_SYSTEM) if self.chat else (COMPLETION_PROMPT, None)
        cli = runtimes.run_cli(
            self.model,
            prompt,
            self.workload.max_tokens,
            threads=self.threads,
            seed=SEED,
            system=system,
            build=self.build,
        )
        self.commands["llama-cli, one turn"] = shell_line(cli.command)
        self.ran["llama-cli single turn"] = self._as("ran", "ran with a pass-through template: no chat template")
        return cli

    def in_process(self) -> ChatResult:
        """The same question in this process through the binding (``create_chat_completion`` or ``create_completion``)."""
        n = self.workload.max_tokens
        if self.chat:
            result = runtimes.binding_chat(self.model, max_tokens=n, threads=self.threads, build=self.build)
        else:
            result = runtimes.binding_complete(
                self.model, COMPLETION_PROMPT, max_tokens=n, threads=self.threads, build=self.build
            )
        self.ran["Python binding"] = f"ran ({self.binding_call})"
        return result

    @property
    def binding_call(self) -> str:
        return self._as("create_chat_completion", "create_completion")

    def from_pretrained(self) -> str:
        """``Llama.from_pretrained`` from the Hub, or the one sentence saying why it cannot run here."""
        try:
            downloaded = runtimes.binding_from_pretrained()
        except UserError as exc:
            self.ran["Llama.from_pretrained"] = "not run: the Hugging Face Hub is unreachable"
            return str(exc)
        path = downloaded.model_path
        downloaded.close()
        self.ran["Llama.from_pretrained"] = "ran"
        return f"downloaded and loaded: {path}"

    def screenshot(self, out: Path) -> ScreenshotResult:
        """The web page llama-server serves, built if needed, with the chapter's question typed in (chat models)."""
        shot = screenshot(
            out, self.model, build=self.build, threads=self.threads, prompt=CHAT_USER if self.chat else None
        )
        self.ran["web UI built with npm, served with --path, screenshot in headless Chromium"] = self._as(
            "ran", "ran, without a question typed in: no chat template"
        )
        return shot

    def other_runtimes(self, ollama_host: str | None, llamafile: str | None, n_requests: int) -> OtherRuntimes:
        """Ollama and llamafile if they are here: the chapter's chat and latency on each (chat models only)."""
        found = OtherRuntimes(runtimes.detect_ollama(ollama_host), runtimes.detect_llamafile(llamafile))
        n = self.workload.max_tokens
        ol = found.ollama
        if ol.present and ol.models and self.chat:
            ep = runtimes.ollama_endpoint(ol)
            found.lines.append("Ollama: " + chat_requests(ep, max_tokens=n).content)
            found.measured["Ollama"] = _latency_row(measure_latency(ep, n_requests, n), f"ran ({ep.model})")
        else:
            found.lines.append(f"Ollama: {ol.note or 'no model pulled'} ({ol.where}); {runtimes.NOT_MEASURED}")
        lf = found.llamafile
        if lf.present and self.chat:
            with runtimes.LlamafileServer(llamafile, threads=self.threads, request_timeout=180) as srv:
                found.lines.append("llamafile: " + chat_requests(srv, max_tokens=n).content)
                found.measured["llamafile"] = _latency_row(measure_latency(srv, n_requests, n), "ran")
        else:
            found.lines.append(f"llamafile: {lf.note} ({lf.where}); {runtimes.NOT_MEASURED}")
        for tool, status in (("Ollama", ol), ("llamafile", lf)):
            self.ran[tool] = "ran" if tool in found.measured else f"not run: {status.note or 'no model pulled'}"
        return found

    # ----------------------------------------------------------------------- the chapter's summaries

    def comparison_table(
        self, latency: LatencyRun, load: ClosedLoop, searched: RateSearchResult, others: OtherRuntimes
    ) -> pd.DataFrame:
        """The three runtimes compared, with what this chapter measured on each ("not measured" elsewhere)."""
        table = latency.table
        here = {
            "chat here": self._as("ran (requests, openai, llama-cli, binding)", "text completion (no chat template)"),
            "TTFT median (ms)": table.loc["time to first token (ms)", "p50"],
            "TPOT median (ms)": table.loc["time per output token (ms)", "p50"],
            "peak aggregate tokens/s": load.levels["aggregate_tokens_per_s"].max(),
            "highest rate meeting the target": capacity.capacity_text(searched),
        }
        return runtimes.comparison_table({"llama.cpp": here, **others.measured})

    def commands_table(self) -> pd.DataFrame:
        """Every llama-server and llama-cli command the chapter ran, as a reader would type it."""
        import pandas as pd

        return pd.Series(self.commands, name="command").to_frame()

    def ran_table(self) -> pd.DataFrame:
        """Each step of the chapter and whether it ran on this machine."""
        import pandas as pd

        return pd.DataFrame(list(self.ran.items()), columns=["step", "on this machine"]).set_index("step")


def _latency_row(df: pd.DataFrame, ran: str) -> dict:
    lat = latency_summary(df)
    return {"chat here": ran, "TTFT median (ms)": lat.iloc[0]["median"], "TPOT median (ms)": lat.iloc[1]["median"]}
