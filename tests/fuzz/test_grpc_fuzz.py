"""Hypothesis-generated requests for every RPC of every gRPC service of the real fleet (see conftest.py).

The worker serves Inference, health and reflection; the control plane serves AdapterRegistry,
WorkerControl, health and reflection. Every method of each gets seeded examples of two kinds, sent over
a generic channel with identity serializers: messages drawn from the method's request descriptor
(`proto_strategies.messages`) and raw bytes that are not a valid encoding (`raw_requests`). Registry
writes carry the admin token and WorkerControl the worker token (a few examples go without, to reach the
refusal), so that every handler is reached. Asserted: no call ends in UNKNOWN or INTERNAL (a server
error nobody mapped) or runs past its deadline; afterwards both servers still serve and the worker still
generates, for the base model and the adapter, directly and through the gateway.
"""

from __future__ import annotations

import time
from collections import Counter

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraplane.inference.v1 import inference_pb2, inference_pb2_grpc
from loraplane.registry.v1 import registry_pb2, registry_pb2_grpc
from loraplane.worker.v1 import worker_pb2
from tests.fuzz.fleet import ADAPTER, ADMIN_TOKEN, HEARTBEAT_TIMEOUT_S, MODEL, WORKER_TOKEN
from tests.fuzz.proto_strategies import messages, raw_requests

# (server, proto module, service) for every service the fleet's gRPC servers publish.
SERVICES = (
    ("worker", inference_pb2, "Inference"),
    ("worker", health_pb2, "Health"),
    ("worker", reflection_pb2, "ServerReflection"),
    ("control_plane", registry_pb2, "AdapterRegistry"),
    ("control_plane", worker_pb2, "WorkerControl"),
    ("control_plane", health_pb2, "Health"),
    ("control_plane", reflection_pb2, "ServerReflection"),
)
METHODS = [
    (server, method)
    for server, module, service in SERVICES
    for method in module.DESCRIPTOR.services_by_name[service].methods
]
# Examples per method and kind; Generate gets more, as it reaches the most code.
EXAMPLES = {"typed": 60, "raw": 20}
EXTRA_EXAMPLES = {"Generate": 240, "Tokenize": 40, "CreateAdapter": 40, "Connect": 40}
TOKENS = {"AdapterRegistry": ADMIN_TOKEN, "WorkerControl": WORKER_TOKEN}
# Strings a generated field may take instead of random text, so that requests name what exists (and
# "fuzz-new", an adapter a generated CreateAdapter may register). DeleteAdapter never gets the served
# adapter's name: with the admin token it would remove it (it is checked afterwards).
NAMES = (MODEL, "fuzz-worker", "fuzz-new", "loraplane.inference.v1.Inference", "", "a", "-1", "../..")
MAX_RESPONSES = 64
# Streams that stay open by contract (a health subscription, a worker's command stream): their first
# response shows how the request was taken, then the call is cancelled.
SUBSCRIPTIONS = {"Watch", "Connect"}
TIMEOUT_S = 60.0
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
SETTINGS = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
CODES: Counter[tuple[str, str]] = Counter()


@pytest.fixture(scope="module")
def channels(fuzz_fleet):
    with (
        grpc.insecure_channel(fuzz_fleet.worker_target) as worker,
        grpc.insecure_channel(fuzz_fleet.control_plane_target) as control_plane,
    ):
        yield {"worker": worker, "control_plane": control_plane}


def call(channel: grpc.Channel, method, payloads: list[bytes], metadata) -> grpc.StatusCode:
    """Send `payloads` (one for a unary request) as raw bytes; the call's final status code. A response
    stream is read for at most MAX_RESPONSES messages (SUBSCRIPTIONS: one), then cancelled."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    kwargs = {"timeout": TIMEOUT_S, "metadata": metadata}
    try:
        if not method.server_streaming:
            if method.client_streaming:
                channel.stream_unary(path)(iter(payloads), **kwargs)
            else:
                channel.unary_unary(path)(payloads[0], **kwargs)
            return grpc.StatusCode.OK
        if method.client_streaming:
            responses = channel.stream_stream(path)(iter(payloads), **kwargs)
        else:
            responses = channel.unary_stream(path)(payloads[0], **kwargs)
        limit = 1 if method.name in SUBSCRIPTIONS else MAX_RESPONSES
        for count, _ in enumerate(responses, 1):
            if count >= limit:
                responses.cancel()
                break
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def templates(fleet) -> dict[str, list[Message]]:
    """Valid requests a drawn message is merged into (its set fields win), so that many examples differ
    from a request that works in a few fields and get past the first check into the handler's depth."""
    inference, registry, worker = inference_pb2, registry_pb2, worker_pb2
    source = registry.AdapterSource(path=fleet.adapter_path)
    params = inference.SamplingParams(max_tokens=4)
    return {
        "Generate": [
            inference.GenerateRequest(model=model, text="Hello there", sampling_params=params)
            for model in (MODEL, ADAPTER)
        ],
        "Tokenize": [inference.TokenizeRequest(model=MODEL, text="Hello there")],
        "CreateAdapter": [
            registry.CreateAdapterRequest(
                adapter=registry.Adapter(name="fuzz-new", source=source, base_model_name=MODEL)
            )
        ],
        "DeleteAdapter": [registry.DeleteAdapterRequest(name="fuzz-new")],
        "GetAdapter": [registry.GetAdapterRequest(name=ADAPTER)],
        "Connect": [
            worker.ConnectRequest(
                hello=worker.Hello(
                    worker_id="fuzz-rogue",
                    base_model_name=MODEL,
                    endpoint="127.0.0.1:1",
                    capacity=worker.Capacity(max_loras=1, max_lora_rank=8, max_num_seqs=1, max_model_len=64),
                )
            )
        ],
    }


def _merged(template: Message, drawn: Message) -> Message:
    merged = type(template)()
    merged.CopyFrom(template)
    merged.MergeFrom(drawn)
    return merged


def _requests(method, kind: str, fleet) -> st.SearchStrategy[list[bytes]]:
    names = NAMES if method.name == "DeleteAdapter" else (*NAMES, ADAPTER, fleet.adapter_path)
    if kind == "raw":
        one = raw_requests(method.input_type, names)
        return st.lists(one, min_size=1, max_size=3 if method.client_streaming else 1)
    drawn = messages(method.input_type, names)
    first = drawn
    if method.name in (valid := templates(fleet)):
        first = drawn | st.builds(_merged, st.sampled_from(valid[method.name]), drawn)
    rest = st.lists(drawn, max_size=2 if method.client_streaming else 0)
    return st.builds(lambda head, tail: [m.SerializeToString() for m in (head, *tail)], first, rest)


@pytest.mark.parametrize("kind", list(EXAMPLES))
@pytest.mark.parametrize(
    ("server", "method"), METHODS, ids=[f"{s}:{m.containing_service.name}.{m.name}" for s, m in METHODS]
)
def test_rpc(fuzz_fleet, channels, server, method, kind):
    token = TOKENS.get(method.containing_service.name)
    examples = EXAMPLES[kind] + (EXTRA_EXAMPLES.get(method.name, 0) if kind == "typed" else 0)

    @settings(SETTINGS, max_examples=examples)
    @given(
        payloads=_requests(method, kind, fuzz_fleet),
        with_token=st.sampled_from((True, True, True, False)),
    )
    def run(payloads, with_token):
        metadata = (("authorization", f"Bearer {token}"),) if token and with_token else ()
        code = call(channels[server], method, payloads, metadata)
        CODES[method.name, code.name] += 1
        assert code not in FORBIDDEN, f"{server} {method.full_name} -> {code.name} for {payloads!r}"

    run()


def test_services_still_work_after_fuzzing(fuzz_fleet, channels):
    print(f"\n{sum(CODES.values())} fuzzed gRPC calls; status codes per method: {sorted(CODES.items())}")
    assert CODES["Generate", "OK"] > 0, "no generated Generate request was served"
    inference = inference_pb2_grpc.InferenceStub(channels["worker"])
    for model in (MODEL, ADAPTER):
        request = inference_pb2.GenerateRequest(
            model=model,
            text="Hello there",
            sampling_params=inference_pb2.SamplingParams(max_tokens=4, temperature=0.0),
        )
        chunks = [r.chunk for r in inference.Generate(request, timeout=60) if r.HasField("chunk")]
        assert sum(len(c.token_ids) for c in chunks) == 4
        assert fuzz_fleet.completion(model)["usage"]["completion_tokens"] == 4
    registry = registry_pb2_grpc.AdapterRegistryStub(channels["control_plane"])
    adapter = registry.GetAdapter(registry_pb2.GetAdapterRequest(name=ADAPTER), timeout=10).adapter
    assert adapter.name == ADAPTER
    # The generated Hellos' sessions are over: each is marked down when its stream ends, at the latest
    # when its heartbeats are overdue (the control plane's heartbeat timeout).
    deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S + 5
    while (ready := _ready_workers(registry)) != ["fuzz-worker"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready == ["fuzz-worker"]
    for channel in channels.values():
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def _ready_workers(registry) -> list[str]:
    workers = registry.ListWorkers(registry_pb2.ListWorkersRequest(), timeout=10).workers
    return [w.worker_id for w in workers if w.state == registry_pb2.WORKER_STATE_READY]
