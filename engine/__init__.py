"""The engine: requests in, tokens out, one step at a time (niyama.engine).

It depends only on `niyama.qos` and never imports torch: the forward pass
runs in a worker process (`niyama.worker`) reached through `protocol.Worker`.
"""
