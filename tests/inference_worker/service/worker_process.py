"""Run `loraplane worker` as a real child process on loopback (demo model, CPU) for end-to-end tests."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from loraplane.grpc_options import client_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
_READY = re.compile(r"serving on ([\w.\-]+):(\d+)")

# Small engine settings shared by the worker and the offline reference, so both compute the same thing.
ENGINE_ARGS = {
    "device": "cpu",
    "dtype": "float32",
    "max_model_len": 512,
    "max_num_seqs": 64,
    "cpu_kv_cache_gb": 0.25,
}


def engine_flags(**overrides: object) -> list[str]:
    flags = []
    for key, value in {**ENGINE_ARGS, **overrides}.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


class WorkerProcess:
    """`python -m loraplane worker ...` with stdout's ready line parsed for the bound port."""

    def __init__(self, args: list[str], log_path: Path, listen: str = "127.0.0.1:0") -> None:
        self.args = [sys.executable, "-m", "loraplane", "--log-level", "INFO", "worker", "--listen", listen]
        self.args += args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def spawn(self) -> None:
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, text=True)

    async def start(self, timeout: float = 180.0) -> int:
        """Spawn (unless spawned) and wait for the ready line; returns the bound port."""
        if self.proc is None:
            self.spawn()
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        match = _READY.search(line)
        if match is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"worker did not start: {line!r}; log:\n{self.log()}")
        self.port = int(match.group(2))
        return self.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    async def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.terminate()
            try:
                await self.wait(30.0)
            except asyncio.TimeoutError:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def inference_stub(target: str) -> tuple[grpc.aio.Channel, inference_pb2_grpc.InferenceStub]:
    channel = grpc.aio.insecure_channel(target, options=client_options())
    return channel, inference_pb2_grpc.InferenceStub(channel)


def generate_request(prompt: str, model: str = "", **params) -> pb.GenerateRequest:
    return pb.GenerateRequest(model=model, text=prompt, sampling_params=pb.SamplingParams(**params))


async def collect(call, messages: list | None = None) -> dict:
    """Read the rest of a Generate stream (after `messages`, already read), checking its shape: start,
    chunks, then usage last."""
    messages = list(messages or [])
    while (message := await call.read()) != grpc.aio.EOF:
        messages.append(message)
    kinds = [m.WhichOneof("response") for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "usage" and set(kinds[1:-1]) == {"chunk"}, kinds
    texts: dict[int, str] = {}
    tokens: dict[int, list[int]] = {}
    finish: dict[int, int] = {}
    for message in messages[1:-1]:
        chunk = message.chunk
        assert chunk.index not in finish, "a chunk after the choice's finish"
        texts[chunk.index] = texts.get(chunk.index, "") + chunk.text
        tokens.setdefault(chunk.index, []).extend(chunk.token_ids)
        if chunk.finish_reason:
            finish[chunk.index] = chunk.finish_reason
    usage = messages[-1].usage
    assert usage.completion_tokens == sum(len(t) for t in tokens.values())
    assert usage.prompt_tokens == len(messages[0].start.prompt_token_ids)
    assert set(finish) == set(texts), "every choice ends with a finish reason"
    return {"texts": [texts[i] for i in sorted(texts)], "finish": finish, "start": messages[0].start}
