"""/tokenize and /detokenize with vLLM's bodies and responses, through the gateway to the real servicer
(the demo model's tokenizer, a scripted engine) on loopback; /version and /ping."""

from __future__ import annotations

import grpc
import httpx
import pytest
import pytest_asyncio

from loraplane import __version__
from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.served_models import ServedModels
from loraplane.inference_worker.service.servicer import InferenceServicer
from tests.inference_worker.service.fake_engine import FakeEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHAT = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def tokenizer(demo_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_path)


@pytest_asyncio.fixture(scope="module")
async def client(tokenizer):
    engine = FakeEngine()
    engine.tokenizer = tokenizer
    servicer = InferenceServicer(max_in_flight=2)
    servicer.attach(engine, ServedModels(engine, engine.model_name, "/models/fake", enable_lora=False))
    server = grpc.aio.server(interceptors=[error_interceptor()])
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gateway = BackgroundGateway(GatewayConfig(host="127.0.0.1", port=0, workers=(f"127.0.0.1:{port}",)))
    await gateway.start()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        yield http, engine.model_name
    await gateway.stop()
    await server.stop(0)


@pytest.mark.parametrize("add_special_tokens", [None, True, False])
async def test_tokenize_a_prompt_as_vllm_answers(client, tokenizer, add_special_tokens):
    http, model = client
    body = {"model": model, "prompt": "Hello world, again"}
    if add_special_tokens is not None:
        body["add_special_tokens"] = add_special_tokens
    reply = (await http.post("/tokenize", json=body)).json()
    expected = tokenizer.encode("Hello world, again", add_special_tokens=add_special_tokens is not False)
    assert reply == {"count": len(expected), "max_model_len": 128, "tokens": expected, "token_strs": None}


async def test_tokenize_a_chat_with_token_strings(client, tokenizer):
    http, model = client
    body = {"model": model, "messages": CHAT, "return_token_strs": True, "add_generation_prompt": False}
    reply = (await http.post("/tokenize", json=body)).json()
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=False)
    expected = tokenizer.encode(rendered, add_special_tokens=False)
    assert reply["tokens"] == expected and reply["count"] == len(expected)
    assert reply["token_strs"] == tokenizer.convert_ids_to_tokens(expected)


async def test_detokenize_round_trips(client, tokenizer):
    http, model = client
    ids = tokenizer.encode("Round and round it goes")
    reply = await http.post("/detokenize", json={"model": model, "tokens": ids})
    assert reply.status_code == 200 and reply.json() == {"prompt": tokenizer.decode(ids)}
    reply = await http.post("/detokenize", json={"tokens": ids})  # no model: the base model's tokenizer
    assert reply.json() == {"prompt": tokenizer.decode(ids)}


@pytest.mark.parametrize(
    ("path", "body", "status", "names"),
    [
        ("/detokenize", {"tokens": [10**9]}, 400, "outside the vocabulary"),
        ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
        ("/detokenize", {"tokens": []}, 400, "tokens"),
        ("/tokenize", {"prompt": "x", "messages": CHAT}, 400, "either prompt"),
        ("/tokenize", {}, 400, "either prompt"),
        ("/tokenize", {"messages": CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
        ("/tokenize", {"messages": CHAT, "chat_template": "{{ x }}"}, 400, "chat_template"),
        ("/tokenize", {"messages": CHAT, "continue_final_message": True}, 400, "continue_final_message"),
        ("/tokenize", {"model": "nope", "prompt": "x"}, 404, "nope"),
        ("/detokenize", {"model": "nope", "tokens": [1]}, 404, "nope"),
    ],
)
async def test_bad_requests_are_openai_errors_naming_the_problem(client, path, body, status, names):
    http, _ = client
    reply = await http.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert names in reply.json()["error"]["message"]


async def test_version_and_ping(client):
    http, _ = client
    assert (await http.get("/version")).json() == {"version": __version__}
    for method in ("GET", "POST"):
        reply = await http.request(method, "/ping")
        assert reply.status_code == 200 and reply.content == b""
