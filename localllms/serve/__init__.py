"""Ways to serve a local model: llama-server, llama-cli, the Python binding, Ollama and llamafile.

One module per job; every public name is re-exported here, so ``serve.LlamaServer``,
``serve.stream_chat`` etc. are what callers (the serving notebook, the tests) use:

* ``process``: loopback ports, and the managed server process: ``LlamaServer`` on a free port,
  ready when ``/health`` says ok, stopped on exit, interrupt or error (process-group kill,
  ``atexit``, and the kernel's parent-death signal), its log kept in a file whose tail is shown
  when something fails.
* ``clients``: the OpenAI-compatible API through plain ``requests`` and the ``openai`` package,
  llama.cpp's native ``/tokenize`` and ``/completion``, the page at "/".
* ``streaming``: streamed chat and text completions timed on the client (TTFT, every inter-token gap).
* ``load``: a bounded load test over several slots and clients.
* ``workload``: the serving benchmark's requests, from the prompts corpus, and one timed request.
* ``loadgen``: the serving benchmark: sequential latency with warm-up, open-loop Poisson arrivals,
  and the search for the highest rate meeting a service target; ``capacity``: its table and
  sentences (not measuring code).
* ``attainment``: a share of requests within the target, with its count and exact (Clopper–Pearson)
  interval; two shares whose intervals overlap are not separated.
* ``options``: server options (slots, continuous batching) compared on the same load;
  ``options_reading``: their table and sentences (not measuring code).
* ``prompt_cache``: time to first token as the prompt grows, with llama-server's prompt cache and without.
* ``stats``: the arithmetic: arrival schedules, percentiles, attainment and goodput, the rate search.
* ``records``: the content-keyed cache of every measurement, and the per-request records in the store.
* ``structured``: structured output under a JSON grammar and a JSON schema, checked strictly.
* ``runtimes``: llama-cli, the in-process binding (``llama_cpp.Llama``), detection of Ollama and
  llamafile, and the comparison of the three.
* ``webui``: the web page llama-server serves, built if needed, and its screenshot.
* ``openwebui``: Open WebUI (optional) on the managed llama-server, and its screenshot; ``openwebui_venv``: its own venv.
* ``chapter``: the serving chapter's calls (``Chapter``: one per section, chat or completion chosen
  from the model, never by the notebook; ``ask``); ``figures``: its figures.

Every request has a timeout and every loop is bounded in count and time, so a server that dies
or hangs produces a :class:`~localllms.errors.UserError` within seconds instead of a hang.
"""

from __future__ import annotations

from . import figures
from .attainment import Attainment, clopper_pearson
from .capacity import capacity_text, rate_reading, rate_table, rate_text
from .chapter import Chapter, OpenLoop, ask, load_average
from .clients import (
    CHAT_SYSTEM,
    CHAT_USER,
    COMPLETION_PROMPT,
    SEED,
    ChatResult,
    Endpoint,
    chapter_messages,
    chat_openai,
    chat_requests,
    complete,
    completion_openai,
    completion_requests,
    probe_root,
    request,
    session,
    tokenize,
)
from .load import load_test
from .loadgen import check_open_loop, open_loop, rate_search, sequential_latency
from .openwebui import OpenWebUIServer, OpenWebUIShot
from .openwebui import install as openwebui_install
from .openwebui import installed as openwebui_installed
from .openwebui import screenshot as openwebui_screenshot
from .options import SERVER_OPTIONS, compare_options
from .options_reading import best_option, options_reading, options_table
from .process import LOOPBACK, LlamaServer, ManagedServer, free_port, live_servers, pid_exists, port_in_use, shell_line
from .prompt_cache import check_lengths, prompt_cache_reading, prompt_cache_sweep, prompt_cache_table
from .records import save_records
from .runtimes import (
    COMPARISON,
    NOT_INSTALLED,
    NOT_MEASURED,
    CliResult,
    LlamafileServer,
    ToolStatus,
    binding_chat,
    binding_complete,
    binding_from_pretrained,
    cli_command,
    comparison_table,
    count_tokens,
    detect_llamafile,
    detect_ollama,
    ollama_endpoint,
    ollama_url,
    require_chat_template,
    run_cli,
)
from .stats import (
    ServiceTarget,
    allowed_misses,
    latency_reading,
    latency_table,
    meets_target,
    percentile_position,
    percentiles,
    poisson_arrivals,
    run_summary,
    search_highest_rate,
)
from .streaming import StreamTiming, latency_summary, measure_latency, stream_chat, stream_completion
from .structured import (
    EXTRACTION_PROMPTS,
    EXTRACTION_SCHEMA,
    EXTRACTION_SYSTEM,
    STRUCTURED_MODES,
    check_json,
    failure_table,
    json_grammar_path,
    structured_output,
    structured_reading,
    validity_table,
)
from .webui import (
    CHROMIUM_FLAGS,
    ScreenshotResult,
    build_ui,
    chromium_screenshot,
    find_chromium,
    screenshot,
    ui_embedded,
)
from .workload import Workload, corpus_workload, timed_request

__all__ = [
    # chapter, figures, attainment, capacity
    "Chapter",
    "OpenLoop",
    "ask",
    "load_average",
    "figures",
    "Attainment",
    "clopper_pearson",
    "capacity_text",
    "rate_text",
    "rate_table",
    # process
    "LOOPBACK",
    "LlamaServer",
    "ManagedServer",
    "free_port",
    "live_servers",
    "pid_exists",
    "port_in_use",
    "shell_line",
    # clients
    "CHAT_SYSTEM",
    "CHAT_USER",
    "COMPLETION_PROMPT",
    "SEED",
    "ChatResult",
    "Endpoint",
    "StreamTiming",
    "chapter_messages",
    "chat_openai",
    "chat_requests",
    "complete",
    "completion_openai",
    "completion_requests",
    "latency_summary",
    "measure_latency",
    "probe_root",
    "request",
    "session",
    "stream_chat",
    "stream_completion",
    "tokenize",
    # load
    "load_test",
    # loadgen, prompt_cache, stats, records
    "SERVER_OPTIONS",
    "Workload",
    "best_option",
    "check_open_loop",
    "compare_options",
    "corpus_workload",
    "timed_request",
    "open_loop",
    "options_reading",
    "options_table",
    "rate_search",
    "sequential_latency",
    "rate_reading",
    "check_lengths",
    "prompt_cache_reading",
    "prompt_cache_sweep",
    "prompt_cache_table",
    "ServiceTarget",
    "allowed_misses",
    "latency_reading",
    "latency_table",
    "meets_target",
    "percentile_position",
    "percentiles",
    "poisson_arrivals",
    "run_summary",
    "search_highest_rate",
    "save_records",
    # structured
    "EXTRACTION_PROMPTS",
    "EXTRACTION_SCHEMA",
    "EXTRACTION_SYSTEM",
    "STRUCTURED_MODES",
    "check_json",
    "failure_table",
    "structured_reading",
    "json_grammar_path",
    "structured_output",
    "validity_table",
    # runtimes
    "COMPARISON",
    "NOT_INSTALLED",
    "NOT_MEASURED",
    "CliResult",
    "LlamafileServer",
    "ToolStatus",
    "binding_chat",
    "binding_complete",
    "binding_from_pretrained",
    "cli_command",
    "comparison_table",
    "count_tokens",
    "detect_llamafile",
    "detect_ollama",
    "ollama_endpoint",
    "ollama_url",
    "require_chat_template",
    "run_cli",
    # webui
    "CHROMIUM_FLAGS",
    "ScreenshotResult",
    "build_ui",
    "chromium_screenshot",
    "find_chromium",
    "screenshot",
    "ui_embedded",
    # openwebui
    "OpenWebUIServer",
    "OpenWebUIShot",
    "openwebui_install",
    "openwebui_installed",
    "openwebui_screenshot",
]
