"""loraplane: multi-LoRA LLM serving as a distributed service.

This package holds the `loraplane` command and the generated gRPC modules (`loraplane.<area>.v1`).
"""

__version__ = "0.1.0"
