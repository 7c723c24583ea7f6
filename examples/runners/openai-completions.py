#!/usr/bin/env python3
"""An exec runner that sends each job to an OpenAI-compatible server's
/v1/completions endpoint (vLLM, llama.cpp's llama-server, TGI, SGLang,
Ollama...) and prints the server's response as the job's output.

    OPENAI_BASE_URL=http://127.0.0.1:8000 \\
      sluice executor ... --runner exec:examples/runners/openai-completions.py

Input (JSON on stdin): prompt (string, required), max_tokens (default 16),
and optionally model, temperature, top_p, stop, seed. The model sent is
input.model, else $OPENAI_MODEL, else Sluice's model name ($SLUICE_MODEL).

Environment: OPENAI_BASE_URL (default http://127.0.0.1:8000; a trailing /v1
is accepted), OPENAI_API_KEY (sent as a bearer token when set),
OPENAI_TIMEOUT_S (default 600).

Exit status: 0 with the response JSON on stdout; 75 (EX_TEMPFAIL, Sluice
retries the job) when the server is busy or down: 429, 5xx, connection
refused, timeout; 2 for a bad input and 1 for any other refusal (Sluice fails
the job for good). Progress lines go to stderr. SIGTERM ends it at once
(Python's default action), which is what Sluice sends on cancel.

Python 3 standard library only.
"""
import json
import os
import socket
import sys
import urllib.error
import urllib.request

EX_TEMPFAIL = 75
PASSED_THROUGH = ("temperature", "top_p", "stop", "seed")


def progress(fraction, text):
    print(f"progress {fraction:g} {text}", file=sys.stderr, flush=True)


def fail(status, message):
    print(message, file=sys.stderr, flush=True)
    return status


def endpoint():
    base = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
    if base.endswith("/v1"):  # the OpenAI SDKs' convention
        base = base[: -len("/v1")]
    return base + "/v1/completions"


def main():
    try:
        job = json.load(sys.stdin)
    except ValueError as e:
        return fail(2, f"input: not JSON: {e}")
    if not isinstance(job, dict):
        return fail(2, "input: want a JSON object")
    prompt = job.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return fail(2, "input.prompt: missing; want a non-empty string")
    max_tokens = job.get("max_tokens", 16)
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        max_tokens = int(max_tokens)  # JSON has one number type
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 1_000_000:
        return fail(2, f"input.max_tokens: {max_tokens!r}; want a whole number from 1 to 1000000")
    model = job.get("model") or os.environ.get("OPENAI_MODEL") or os.environ.get("SLUICE_MODEL") or ""

    request = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    request.update({k: job[k] for k in PASSED_THROUGH if k in job})
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["OPENAI_API_KEY"]
    url = endpoint()
    timeout = float(os.environ.get("OPENAI_TIMEOUT_S", "600"))

    progress(0.05, f"POST {url} (model {model or 'server default'}, max_tokens {max_tokens})")
    req = urllib.request.Request(url, data=json.dumps(request).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read(1024).decode("utf-8", "replace").strip()
        busy = e.code == 429 or e.code >= 500
        return fail(EX_TEMPFAIL if busy else 1, f"{url}: HTTP {e.code} {e.reason}: {detail}")
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        return fail(EX_TEMPFAIL, f"{url}: {reason}")

    try:
        out = json.loads(body)
    except ValueError:
        return fail(1, f"{url}: answered with something that is not JSON: {body[:200]!r}")
    if not isinstance(out, dict):
        return fail(1, f"{url}: answered with a JSON {type(out).__name__}, not an object")
    tokens = (out.get("usage") or {}).get("completion_tokens")
    progress(1, f"done: {tokens} tokens" if tokens is not None else "done")
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
