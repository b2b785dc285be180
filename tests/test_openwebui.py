"""Open WebUI on the managed llama-server: real servers on 127.0.0.1, no mocks.

Skipped unless Open WebUI is installed in its own venv (``make open-webui``); ``make test`` never
installs it. Both servers run with one thread and answers of a few tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from localllms import serve
from localllms.build import BuildInfo
from localllms.errors import UserError
from localllms.models import ResolvedModel
from localllms.serve import openwebui

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        openwebui.installed() is None,
        reason=f"Open WebUI is not installed in {openwebui.venv_dir()}; `make open-webui` installs it (about 3 GB)",
    ),
]


@pytest.fixture(scope="module")
def llm(build: BuildInfo, smollm2: ResolvedModel, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    with serve.LlamaServer(smollm2, threads=1, build=build, log_dir=logs, extra_args=["--temp", "0"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def ui(llm: serve.LlamaServer, tmp_path_factory: pytest.TempPathFactory):
    with serve.OpenWebUIServer(llm, log_dir=tmp_path_factory.mktemp("ui-logs")) as srv:
        yield srv


def test_answers_on_loopback_only(ui: serve.OpenWebUIServer) -> None:
    assert ui.url.startswith("http://127.0.0.1:")
    assert ui.version() == openwebui.pinned("open-webui")
    listening = ui.listening()
    assert listening and all(addr.startswith("127.0.0.1:") for addr in listening), listening
    page = requests.get(ui.url + "/", timeout=30)
    assert page.ok and "<title>Open WebUI</title>" in page.text


def test_lists_the_llama_server_model_and_nothing_else(ui: serve.OpenWebUIServer, llm: serve.LlamaServer) -> None:
    # Ollama is off and the only OpenAI-compatible connection is the managed llama-server
    assert ui.models() == [llm.model_name]


def test_a_chat_through_open_webui_is_the_llama_server_answer(
    ui: serve.OpenWebUIServer, llm: serve.LlamaServer
) -> None:
    # greedy and the same request: Open WebUI forwards it, so the text equals what llama-server says directly
    via_ui = ui.chat(serve.CHAT_USER, max_tokens=12)
    body = {"messages": [{"role": "user", "content": serve.CHAT_USER}], "max_tokens": 12, "temperature": 0}
    direct = serve.request(llm.endpoint, "POST", "/v1/chat/completions", json_body=body).json()
    assert via_ui.strip() and via_ui == direct["choices"][0]["message"]["content"]


def test_stop_leaves_no_process_and_no_data(llm: serve.LlamaServer, tmp_path: Path) -> None:
    srv = serve.OpenWebUIServer(llm, log_dir=tmp_path)
    with srv:
        pid, data = srv.pid, Path(srv.settings()["DATA_DIR"])
        assert pid and serve.pid_exists(pid) and data.is_dir() and data.parent == openwebui.home()
        assert srv in serve.live_servers()
    assert not serve.pid_exists(pid)
    assert not data.exists() and srv not in serve.live_servers()
    assert '"GET /ready HTTP/1.1" 200' in srv.log_path.read_text()  # it was ready by its own account


def test_a_back_end_not_started_is_one_sentence(smollm2: ResolvedModel, build: BuildInfo, tmp_path: Path) -> None:
    backend = serve.LlamaServer(smollm2, threads=1, build=build, log_dir=tmp_path)
    srv = serve.OpenWebUIServer(backend, log_dir=tmp_path)
    with pytest.raises(UserError, match=r"^The llama-server is not started; use it as `with server:`"):
        srv.start()
    assert srv.proc is None  # nothing was launched
