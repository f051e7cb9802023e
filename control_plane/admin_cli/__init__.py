"""Admin CLI: `loraplane adapters ...` and `loraplane workers ...` against a running control plane.

Exit codes: 0 success; 1 the control plane answered with an error (its status and message are
printed); 2 usage error; 3 the control plane is unreachable (or did not answer in time).
"""
