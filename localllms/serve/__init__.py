"""Ways to serve a local model: llama-server, llama-cli, the Python binding, Ollama and llamafile.

One module per job; every public name is re-exported here, so ``serve.LlamaServer``,
``serve.stream_chat`` etc. are what callers (the serving notebook, the tests) use:

* ``process``: loopback ports, and the managed server process: ``LlamaServer`` on a free port,
  ready when ``/health`` says ok, stopped on exit, interrupt or error (process-group kill,
  ``atexit``, and the kernel's parent-death signal), its log kept in a file whose tail is shown
  when something fails.
* ``clients``: the OpenAI-compatible API through plain ``requests`` and the ``openai`` package,
  llama.cpp's native ``/tokenize`` and ``/completion``, streaming latency, the page at "/".
* ``load``: a bounded load test over several slots and clients.
* ``structured``: structured output under a JSON grammar and a JSON schema, checked strictly.
* ``runtimes``: llama-cli, the in-process binding (``llama_cpp.Llama``), detection of Ollama and
  llamafile, and the comparison of the three.
* ``webui``: the web page llama-server serves, built if needed, and its screenshot.

Every request has a timeout and every loop is bounded in count and time, so a server that dies
or hangs produces a :class:`~localllms.errors.UserError` within seconds instead of a hang.
"""

from __future__ import annotations

from .clients import (
    CHAT_SYSTEM,
    CHAT_USER,
    SEED,
    ChatResult,
    Endpoint,
    StreamTiming,
    chapter_messages,
    chat_openai,
    chat_requests,
    complete,
    latency_summary,
    measure_latency,
    probe_root,
    request,
    session,
    stream_chat,
    tokenize,
)
from .load import load_test
from .process import LOOPBACK, LlamaServer, ManagedServer, free_port, live_servers, pid_exists, port_in_use
from .runtimes import (
    COMPARISON,
    NOT_INSTALLED,
    NOT_MEASURED,
    CliResult,
    LlamafileServer,
    ToolStatus,
    binding_chat,
    binding_from_pretrained,
    comparison_table,
    count_tokens,
    detect_llamafile,
    detect_ollama,
    ollama_endpoint,
    ollama_url,
    require_chat_template,
    run_cli,
)
from .structured import (
    EXTRACTION_PROMPTS,
    EXTRACTION_SCHEMA,
    EXTRACTION_SYSTEM,
    STRUCTURED_MODES,
    check_json,
    json_grammar_path,
    structured_output,
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

__all__ = [
    # process
    "LOOPBACK",
    "LlamaServer",
    "ManagedServer",
    "free_port",
    "live_servers",
    "pid_exists",
    "port_in_use",
    # clients
    "CHAT_SYSTEM",
    "CHAT_USER",
    "SEED",
    "ChatResult",
    "Endpoint",
    "StreamTiming",
    "chapter_messages",
    "chat_openai",
    "chat_requests",
    "complete",
    "latency_summary",
    "measure_latency",
    "probe_root",
    "request",
    "session",
    "stream_chat",
    "tokenize",
    # load
    "load_test",
    # structured
    "EXTRACTION_PROMPTS",
    "EXTRACTION_SCHEMA",
    "EXTRACTION_SYSTEM",
    "STRUCTURED_MODES",
    "check_json",
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
    "binding_from_pretrained",
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
]
