"""The usual way, as a baseline: a Flask app that loads the model when it is imported.

Run it as `python -m thawllm.bench.flask_app MODEL --port P`. Like the
CPU demo apps of 2023 it loads the model at import, so its port opens only
after the model has loaded, and it answers GET /predict?prompt=... with
{"result": ...}. Those apps used CTransformers; version 0.2.27, the last
release (2023), cannot read current GGUF files, so this one calls
llama_cpp.Llama directly. It passes the same context size and thread count
as thaw and keeps llama-cpp-python's other defaults.

It also returns the token counts that llama-cpp-python reports, which the
benchmark needs to compute decoding speed.
"""

from __future__ import annotations

import argparse
import os
import sys

from flask import Flask, jsonify, request
from llama_cpp import Llama

DEFAULT_MAX_TOKENS = 16
DEFAULT_TEMPERATURE = 0.8
CONTEXT_SIZE = 2048


def _parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m thawllm.bench.flask_app")
    parser.add_argument("model", help="GGUF model file")
    parser.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default 5000)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    return parser.parse_args(argv)


options = _parse_arguments(sys.argv[1:])
llm = Llama(model_path=options.model, n_ctx=CONTEXT_SIZE, n_threads=options.threads or os.cpu_count(),
            verbose=False)
app = Flask(__name__)


@app.get("/predict")
def predict():
    prompt = request.args.get("prompt", "")
    try:
        max_tokens = int(request.args.get("max_tokens", DEFAULT_MAX_TOKENS))
        temperature = float(request.args.get("temperature", DEFAULT_TEMPERATURE))
    except ValueError:
        return jsonify({"error": "max_tokens must be an integer and temperature a number."}), 400
    completion = llm(prompt, max_tokens=max_tokens, temperature=temperature)
    return jsonify({"result": completion["choices"][0]["text"], "usage": completion["usage"]})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=options.port)
