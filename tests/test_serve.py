"""llama-server and the other serving paths, on the real build and models (no mocks).

Servers run with one thread and few, short requests: the file stays near a minute on 2 cores. The
arithmetic of the serving benchmark (arrivals, percentiles, goodput, the rate search) is tested on
known inputs in tests/unit/test_serve_stats.py; here it runs against a real server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from localllms import serve
from localllms.build import BuildInfo
from localllms.errors import UserError
from localllms.models import ResolvedModel
from localllms.paths import cache_dir


@pytest.fixture(scope="module")
def smol_server(build: BuildInfo, smollm2: ResolvedModel, tmp_path_factory: pytest.TempPathFactory):
    """One shared single-slot SmolLM2 server for the read-only tests."""
    with serve.LlamaServer(smollm2, threads=1, build=build, log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def _one_sentence(message: str) -> str:
    first = message.splitlines()[0]
    assert first.endswith("."), first
    return first


# --------------------------------------------------------------------------- lifecycle


def test_server_ready_then_stopped_without_orphan(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    srv = serve.LlamaServer(smollm2, threads=1, build=build, log_dir=tmp_path)
    with srv:
        assert srv.health() == {"status": "ok"}
        assert srv.url.startswith("http://127.0.0.1:")
        pid = srv.pid
        assert pid and serve.pid_exists(pid)
        assert srv in serve.live_servers()  # registered for the atexit hook
    assert not serve.pid_exists(pid)
    assert srv not in serve.live_servers()
    assert srv.log_path and srv.log_path.parent == tmp_path and "listening on" in srv.log_path.read_text()


def test_no_orphan_after_an_exception_inside_the_context(
    build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with serve.LlamaServer(smollm2, threads=1, build=build, log_dir=tmp_path) as srv:
            pid = srv.pid
            raise RuntimeError("boom")
    assert pid is not None and not serve.pid_exists(pid)


def test_no_orphan_when_python_itself_is_killed(tmp_path: Path) -> None:
    # SIGKILL skips atexit and __exit__; the parent-death signal must still stop the server
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed, so no parent-death signal is set")
    script = (
        "import sys, time\n"
        "from localllms import serve\n"
        "from localllms.models import resolve\n"
        "srv = serve.LlamaServer(resolve('smollm2-135m-instruct'), threads=1, log_dir=sys.argv[1]).start()\n"
        "print(srv.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert serve.pid_exists(pid)
    finally:
        parent.kill()
        parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while serve.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not serve.pid_exists(pid)


def test_busy_port_is_one_sentence(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        srv = serve.LlamaServer(smollm2, threads=1, port=port, build=build, log_dir=tmp_path)
        with pytest.raises(UserError) as err:
            srv.start()
    assert _one_sentence(str(err.value)) == (
        f"Port 127.0.0.1:{port} is already in use; pass another port, or port=None to pick a free one."
    )
    assert srv.proc is None  # nothing was launched


def test_a_port_held_by_another_server_is_refused(smol_server: serve.LlamaServer, tmp_path: Path) -> None:
    # the chapter's old demonstration: a second llama-server asked for the port the first one holds
    second = serve.LlamaServer(smol_server.model, threads=1, port=smol_server.port, log_dir=tmp_path)
    with pytest.raises(UserError) as err:
        second.start()
    assert _one_sentence(str(err.value)) == (
        f"Port 127.0.0.1:{smol_server.port} is already in use; pass another port, or port=None to pick a free one."
    )
    assert second.proc is None and smol_server.health() == {"status": "ok"}  # the first one is untouched


def test_startup_failure_shows_the_log_tail(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    srv = serve.LlamaServer(smollm2, threads=1, build=build, log_dir=tmp_path, extra_args=["--no-such-flag"])
    with pytest.raises(UserError) as err:
        srv.start()
    message = str(err.value)
    assert "exited with code" in _one_sentence(message)
    assert "--no-such-flag" in message  # the server's own complaint, from the log tail
    assert not serve.pid_exists(srv.pid)


def test_api_key_is_required_when_set(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    key = "test-key-123"
    with serve.LlamaServer(smollm2, threads=1, api_key=key, build=build, log_dir=tmp_path) as srv:
        assert key not in " ".join(srv.proc.args)  # passed through the environment, not visible in ps
        r = requests.post(
            srv.url + "/v1/chat/completions", json={"messages": serve.chapter_messages(), "max_tokens": 2}, timeout=30
        )
        assert r.status_code == 401
        r = requests.post(srv.url + "/v1/completions", json={"prompt": serve.COMPLETION_PROMPT}, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["message"] == "Invalid API Key"
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200  # health stays public
        anonymous = serve.Endpoint(base_url=srv.url, name="llama-server")
        with pytest.raises(UserError, match="401 Unauthorized"):
            serve.chat_requests(anonymous, max_tokens=2)
        with pytest.raises(UserError, match="401 Unauthorized"):
            serve.chat_openai(anonymous, max_tokens=2)
        with pytest.raises(UserError, match="401 Unauthorized"):
            serve.tokenize(anonymous, "hello")
        with pytest.raises(UserError, match="401 Unauthorized"):
            serve.complete(anonymous, "hello", n_predict=2)
        assert serve.chat_requests(srv, max_tokens=2).usage["completion_tokens"] >= 1
        assert serve.ask(srv, "openai", max_tokens=2).usage["completion_tokens"] >= 1  # the key goes with every client


def test_dead_server_gives_a_clear_error_within_seconds(
    build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path
) -> None:
    with serve.LlamaServer(smollm2, threads=1, ctx_size=4096, build=build, log_dir=tmp_path) as srv:
        pid = srv.pid
        killed_at: list[float] = []

        def kill() -> None:
            killed_at.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(1.5, kill)
        timer.start()
        try:
            with pytest.raises(UserError) as err:
                serve.stream_chat(srv, max_tokens=3000, ignore_eos=True)  # far longer than 1.5 s
        finally:
            timer.cancel()
        assert killed_at and time.monotonic() - killed_at[0] < 10
        assert f"(pid {pid}) exited with code -9" in _one_sentence(str(err.value))
        t0 = time.monotonic()
        with pytest.raises(UserError, match="exited with code"):
            serve.chat_requests(srv, max_tokens=4)
        assert time.monotonic() - t0 < 10
    assert not serve.pid_exists(pid)


# --------------------------------------------------------------------------- clients


def test_chat_with_requests_and_openai_agree(smol_server: serve.LlamaServer) -> None:
    a = serve.chat_requests(smol_server, max_tokens=12)
    b = serve.chat_openai(smol_server, max_tokens=12)
    for res in (a, b):
        assert res.content.strip()
        assert res.usage["completion_tokens"] == 12 and res.finish_reason == "length"
        assert res.timings and res.timings["predicted_n"] == 12
    assert a.content == b.content  # greedy, same seed, prompt recomputed: the same reply


def test_ask_sends_a_chat_to_a_model_with_a_chat_template(smol_server: serve.LlamaServer) -> None:
    assert smol_server.chat_template
    for client in ("requests", "openai"):
        reply = serve.ask(smol_server, client, max_tokens=6)
        assert reply.client == client and reply.raw["object"] == "chat.completion"
        assert reply.content == serve.chat_requests(smol_server, max_tokens=6).content
    with pytest.raises(UserError, match="client must be one of requests, openai"):
        serve.ask(smol_server, "curl")


def test_tokenize_agrees_with_the_model_tokenizer(
    smol_server: serve.LlamaServer, smollm2: ResolvedModel, build: BuildInfo
) -> None:
    text = "The capital of France is"
    tokens = serve.tokenize(smol_server, text)
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert len(tokens) == serve.count_tokens(smollm2, text, build)  # no special tokens added, like count_tokens


def test_streaming_latency_fields(smol_server: serve.LlamaServer) -> None:
    df = serve.measure_latency(smol_server, n_requests=2, max_tokens=8)
    assert len(df) == 2 and (df["output_tokens"] == 8).all()
    assert ((df["ttft_ms"] > 0) & (df["ttft_ms"] <= df["e2e_ms"])).all()
    summary = serve.latency_summary(df)
    assert list(summary.columns) == ["median", "p95", "n"]
    assert (summary["median"] <= summary["p95"]).all()


def test_root_page_of_this_build(smol_server: serve.LlamaServer, build: BuildInfo) -> None:
    page = serve.probe_root(smol_server)
    if serve.ui_embedded(build):
        assert page["status"] == 200
    else:  # built with LLAMA_BUILD_UI=OFF: nothing is served at "/"
        assert page["status"] == 404 and "File Not Found" in page["body_start"]


def test_static_path_is_served_at_root(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><head><title>local chat</title></head><body>hi</body></html>")
    with serve.LlamaServer(smollm2, threads=1, static_path=site, build=build, log_dir=tmp_path) as srv:
        page = serve.probe_root(srv)
    assert page["status"] == 200 and page["title"] == "local chat"


def test_chromium_screenshot_with_busy_low_fds(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium on this machine")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body><h1>local chat</h1><textarea></textarea></body></html>")
    # a Jupyter kernel holds many fds, so the DevTools pipes get numbers above 9 (this once broke `sh` redirection)
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(12)]
    try:
        with serve.LlamaServer(smollm2, threads=1, static_path=site, build=build, log_dir=tmp_path) as srv:
            image = serve.chromium_screenshot(srv.url + "/", tmp_path / "shot.png", size=(640, 400), timeout=60)
    finally:
        for fd in fillers:
            os.close(fd)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 1000


def test_setup_commands_fail_in_one_sentence_with_their_log(tmp_path: Path) -> None:
    """The web UI build and the Open WebUI install run their commands through serve.webui.run_logged."""
    from localllms.serve.webui import run_logged

    log = tmp_path / "steps.log"
    assert run_logged(["sh", "-c", "echo fine"], log, 30, "The step 'ok'") >= 0
    with pytest.raises(
        UserError,
        match=r"(?s)The step 'bad' failed with exit code 3; see .*steps.log\.\nLast lines of the log:\n.*boom",
    ):
        run_logged(["sh", "-c", "echo boom; exit 3"], log, 30, "The step 'bad'")
    with pytest.raises(UserError, match=r"The step 'slow' did not finish within 1 s; see "):
        run_logged(["sleep", "10"], log, 1, "The step 'slow'")
    assert "$ sh -c echo fine\nfine\n" in log.read_text()  # each command and its output, in order


def test_setup_builds_the_web_ui_the_chapter_serves(build: BuildInfo) -> None:
    """`make setup` runs `build-ui`; what it prints is the directory llama-server gets with --path."""
    proc = subprocess.run([sys.executable, "-m", "localllms", "--json", "build-ui"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if serve.ui_embedded(build):
        assert out["ui"].startswith("embedded")
    else:
        assert (Path(out["ui"]) / "index.html").exists() and Path(out["ui"]) == serve.build_ui(build)


def test_a_web_ui_that_cannot_be_built_is_one_sentence(build: BuildInfo, tmp_path: Path) -> None:
    """Without npm, `make setup`'s `build-ui` says so in one sentence (a cache holding this machine's
    build and source, linked, and no web UI yet)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("llama.cpp", "src"):
        (cache / name).symlink_to(cache_dir(name))
    env = {k: v for k, v in os.environ.items() if k != "LOCALLLMS_PROGRESS"}
    env |= {"LOCALLLMS_CACHE": str(cache), "PATH": str(tmp_path), "CC": shutil.which("cc") or "cc"}
    proc = subprocess.run(
        [sys.executable, "-m", "localllms", "build-ui"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: npm is not installed, so the web UI cannot be built; install Node.js 20+ with npm and rerun."
    )


def test_bounded_load_test_has_no_failures(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    summary, per_request = serve.load_test(
        smollm2, concurrency=(1, 2), requests_per_client=1, max_tokens=6, threads=1, build=build, log_dir=tmp_path
    )
    assert list(summary["clients"]) == [1, 2]
    assert (summary["failed"] == 0).all() and summary["healthy_after"].all()
    assert list(summary["requests"]) == [1, 2] and len(per_request) == 3
    assert (summary["aggregate_tokens_per_s"] > 0).all()


def test_json_schema_mode_is_always_valid(smol_server: serve.LlamaServer, build: BuildInfo) -> None:
    prompts = list(serve.EXTRACTION_PROMPTS)[:3]
    df = serve.structured_output(smol_server, prompts=prompts, modes=["json_schema"], build=build)
    assert len(df) == 3
    assert df["valid"].all(), df[["reply", "reason"]].to_string()
    table = serve.validity_table(df)
    assert table.loc["json_schema", "valid_share"] == 1.0


def test_check_json_separates_syntax_from_schema() -> None:
    assert serve.check_json('{"title": "call", "time": "20:00", "participants": []}') == (True, True, "")
    parses, valid, reason = serve.check_json('{"title": "call", "time": 8, "participants": []}')
    assert parses and not valid and reason.startswith("schema")
    assert serve.check_json('```json\n{"title": "call"}\n```')[:2] == (False, False)
    assert serve.json_grammar_path(None).name == "json.gbnf"


# --------------------------------------------------------------------------- models without a template, binding


def test_chat_on_a_model_without_template_is_refused(build: BuildInfo, gemma: ResolvedModel, tmp_path: Path) -> None:
    assert not gemma.info.chat_template
    with serve.LlamaServer(gemma, threads=1, build=build, log_dir=tmp_path) as srv:
        for call in (serve.chat_requests, serve.chat_openai, serve.stream_chat):
            with pytest.raises(UserError) as err:
                call(srv, max_tokens=4)
            assert "has no chat template" in _one_sentence(str(err.value))
    with pytest.raises(UserError, match="has no chat template"):
        serve.binding_chat(gemma, max_tokens=4, threads=1, build=build)


def test_completion_works_without_a_chat_template(build: BuildInfo, gemma: ResolvedModel, tmp_path: Path) -> None:
    text = "The capital of France is"
    with serve.LlamaServer(gemma, threads=1, build=build, log_dir=tmp_path) as srv:
        out = serve.complete(srv, text, n_predict=6, ignore_eos=True)
        ids = serve.tokenize(srv, text)
        by_ids = serve.complete(srv, ids, n_predict=2, ignore_eos=True)
    assert out["content"].strip() and out["tokens_predicted"] == 6 and out["timings"]["predicted_n"] == 6
    assert out["tokens_evaluated"] >= len(ids)  # the text prompt may get a BOS token
    assert by_ids["tokens_evaluated"] == len(ids) and by_ids["tokens_predicted"] == 2  # ids are sent as they are


def test_binding_chat_in_process(build: BuildInfo, smollm2: ResolvedModel) -> None:
    res = serve.binding_chat(smollm2, max_tokens=8, threads=1, build=build)
    assert res.content.strip() and res.usage["completion_tokens"] == 8


def test_from_pretrained_offline_is_one_fast_sentence() -> None:
    from localllms.models import hub_reachable

    if hub_reachable():
        pytest.skip("the Hugging Face Hub is reachable here; the offline message cannot be checked")
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        serve.binding_from_pretrained()
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "\n" not in message and message.count(". ") == 0
    assert "not reachable" in message and "model_path" in message


# --------------------------------------------------------------------------- Ollama, llamafile


def test_ollama_address_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert serve.ollama_url() == "http://127.0.0.1:11434"
    assert serve.ollama_url("0.0.0.0") == "http://127.0.0.1:11434"
    assert serve.ollama_url("example.local:9999") == "http://example.local:9999"
    monkeypatch.setenv("OLLAMA_HOST", "https://box:1234/")
    assert serve.ollama_url() == "https://box:1234"


def test_absent_ollama_and_llamafile_are_reported_not_faked(tmp_path: Path) -> None:
    status = serve.detect_ollama(f"127.0.0.1:{serve.free_port()}")  # nothing listens on a free port
    assert not status.present and "no server" in status.where
    assert not serve.detect_llamafile(None).present
    missing = serve.detect_llamafile(tmp_path / "nope.llamafile")
    assert not missing.present and missing.note == serve.NOT_INSTALLED
    table = serve.comparison_table({"llama.cpp": {"chat": "ran"}})
    assert table.loc["Ollama", "chat"] == serve.NOT_MEASURED and table.loc["llama.cpp", "chat"] == "ran"


# --------------------------------------------------------------------------- the serving benchmark


def test_shell_line_shortens_paths(smollm2: ResolvedModel, build: BuildInfo) -> None:
    srv = serve.LlamaServer(smollm2, threads=1, build=build)
    line = srv.command_line(port=8080)
    assert line.startswith(f"llama-server -m {smollm2.path.name} ") and "--port 8080" in line and "/" not in line
    assert serve.shell_line(["/x/y/llama-cli", "-p", "a b"]) == "llama-cli -p 'a b'"


def test_stream_records_every_gap(smol_server: serve.LlamaServer) -> None:
    t = serve.stream_chat(smol_server, max_tokens=8, ignore_eos=True)
    assert t.output_tokens == 8 and len(t.itl_ms) == 7 and t.finish_reason == "length"
    # TPOT is the mean gap, measured to the end of the stream (so at least the sum of the gaps)
    assert t.tpot_ms is not None and t.tpot_ms * 7 >= sum(t.itl_ms) - 1e-6
    assert t.ttft_ms <= t.e2e_ms and t.prompt_tokens and t.cached_tokens == 0  # cache_prompt is off


def test_prompt_cache_is_reused_only_when_asked(smol_server: serve.LlamaServer) -> None:
    prefix = serve.tokenize(smol_server, "The quick brown fox jumps over the lazy dog. " * 8)
    first = serve.stream_completion(smol_server, prefix + [30], max_tokens=2, cache_prompt=True, ignore_eos=True)
    again = serve.stream_completion(smol_server, prefix + [13], max_tokens=2, cache_prompt=True, ignore_eos=True)
    cold = serve.stream_completion(smol_server, prefix + [13], max_tokens=2, cache_prompt=False, ignore_eos=True)
    assert first.prompt_tokens == len(prefix) + 1
    assert again.cached_tokens is not None and again.cached_tokens >= len(prefix)  # the shared prefix was reused
    assert cold.cached_tokens == 0


def test_open_loop_at_two_rates(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    workload = serve.Workload(("Tell me about cats.", "Tell me about dogs."), max_tokens=4, chat=True)
    target = serve.ServiceTarget(ttft_ms=60_000, tpot_ms=10_000)  # loose: a busy test machine still meets it
    with serve.LlamaServer(smollm2, threads=1, parallel=2, build=build, log_dir=tmp_path) as srv:
        for rate in (2.0, 8.0):
            rows, duration = serve.open_loop(srv, workload, rate, n_requests=3, seed=5)
            schedule = serve.poisson_arrivals(rate, 3, seed=5)
            assert [r["scheduled_s"] for r in rows] == schedule
            assert all(r["ok"] and r["sent_s"] >= r["scheduled_s"] - 1e-3 for r in rows), rows
            assert all(r["output_tokens"] == 4 and len(r["itl_ms"]) == 3 for r in rows)
            assert duration == max(r["done_s"] for r in rows) > schedule[-1]
            summary = serve.run_summary(pd.DataFrame(rows), target, duration, min_requests=3)
            assert summary["sent"] == 3 and summary["failed"] == 0 and summary["attainment"] == 1.0
            assert summary["met"] == 3 and summary["meets_target"]
            assert summary["goodput_rps"] == pytest.approx(3 / duration)


def test_a_probe_that_could_not_send_every_request_does_not_pass(
    build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path
) -> None:
    from localllms.serve.loadgen import run_probe

    workload = serve.Workload(("Tell me about cats.",), max_tokens=3, chat=True)
    target = serve.ServiceTarget(ttft_ms=60_000, tpot_ms=10_000, attainment=0.9)  # every request sent meets it
    schedule = serve.poisson_arrivals(0.5, 3, seed=5)
    with serve.LlamaServer(smollm2, threads=1, parallel=2, build=build, log_dir=tmp_path) as srv:
        cut = run_probe(srv, workload, 0.5, 3, 5, target, budget=schedule[1] / 2)  # only the first is sent in time
    s = cut["summary"]
    assert s["sent"] == 1 and s["met"] == 1 and s["attainment"] == 1.0
    assert not s["meets_target"]  # 1 of 1 met, but 3 were asked for: a short probe proves nothing


def test_records_go_to_the_store_with_provenance(build: BuildInfo, smollm2: ResolvedModel, tmp_path: Path) -> None:
    from localllms import store

    records = pd.DataFrame({"ok": [True, False], "ttft_ms": [10.0, None], "itl_ms": [[1.0, 2.0], []]})
    db = tmp_path / "r.duckdb"
    for _ in range(2):  # a rerun replaces its rows
        serve.save_records(records, "trial", {"n": 2}, smollm2, build, 1, store_path=db)
    rows = store.query("SELECT * FROM serving_requests ORDER BY row", db)
    assert len(rows) == 2 and rows["model_sha256"].eq(smollm2.sha256).all()
    assert rows["llama_cpp_commit"].eq(build.llama_cpp_commit).all() and rows["date"].notna().all()
    assert json.loads(rows["itl_ms"][0]) == [1.0, 2.0] and pd.isna(rows["ttft_ms"][1])


def test_base_model_is_served_through_completions(build: BuildInfo, gemma: ResolvedModel, tmp_path: Path) -> None:
    assert not gemma.info.chat_template
    workload = serve.corpus_workload(gemma, ["A text about the sea.", "A text about mountains."], max_tokens=4)
    assert workload.endpoint == "/v1/completions"
    with serve.LlamaServer(gemma, threads=1, build=build, log_dir=tmp_path) as srv:
        t = workload.send(srv, 1)
        a = serve.completion_requests(srv, serve.COMPLETION_PROMPT, max_tokens=4)
        b = serve.completion_openai(srv, serve.COMPLETION_PROMPT, max_tokens=4)
        asked = serve.ask(srv, "openai", max_tokens=4)  # picks /v1/completions from the model: no chat template
    assert t.output_tokens == 4 and len(t.itl_ms) == 3
    assert a.content and a.content == b.content and a.usage["completion_tokens"] == 4
    assert asked.raw["object"] == "text_completion" and asked.content == a.content


def test_llama_cli_continues_text_on_a_base_model(build: BuildInfo, gemma: ResolvedModel) -> None:
    cli = serve.run_cli(gemma, serve.COMPLETION_PROMPT, n_predict=6, threads=1, build=build)
    assert cli.returncode == 0 and cli.text and cli.generation_tps
    assert "<|im_start|>" not in cli.text  # no generic chat format wrapped around the text
    line = serve.shell_line(cli.command)
    assert line.startswith(f"llama-cli -m {gemma.path.name} ") and "--chat-template-file plain.jinja" in line
    with pytest.raises(UserError, match="no place for a system prompt"):
        serve.cli_command(gemma, "x", threads=1, system="be brief", build=build)


def test_count_tokens_creates_no_context(build: BuildInfo, smollm2: ResolvedModel) -> None:
    from localllms.build import llama_log_path

    log = llama_log_path()
    before = log.read_text() if log.exists() else ""
    assert serve.count_tokens(smollm2, "Hello world, hello world.", build) > 3
    after = log.read_text() if log.exists() else ""
    assert "n_ctx_train" not in after[len(before) :] and "llama_context" not in after[len(before) :]
