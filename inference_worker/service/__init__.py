"""The worker's service wing: the gRPC server, its servicer, message conversion, the control-plane link.

The engine wing (the rest of `loraplane.inference_worker`) knows nothing of gRPC; this wing talks to it
only through the engine's async front end. Layout mirrors `loraplane.control_plane`: `server` (process
lifecycle), `servicer` (Inference RPCs), `convert` (protobuf <-> engine types), `served_models` (names
and adapter operations), `control_client` (the WorkerControl stream), `config` (the one place reading the
environment), `interceptors` (domain errors -> status codes), `cli` (`loraplane worker`).
"""
