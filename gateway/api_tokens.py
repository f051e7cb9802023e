"""vLLM's utility routes: POST /tokenize, POST /detokenize, GET /version, GET and POST /ping.

Semantics: /ping answers 200 with an empty body while the gateway runs (vLLM's liveness probe, as on
SageMaker); /version is `{"version": <loraplane's version>}`. /health (in app.py) says whether any worker
serves.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from loraplane import __version__

router = APIRouter()


@router.api_route("/ping", methods=["GET", "POST"])
async def ping() -> Response:
    return Response(status_code=200)


@router.get("/version")
async def version() -> JSONResponse:
    return JSONResponse({"version": __version__})
