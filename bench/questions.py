"""Question parser: intent + slot accuracy over the corpus and parse latency, against a bare regex pass.

Parses every question of ``tests/questions/corpus.yaml`` with the corpus clock and sites and prints

* accuracy: intent alone, and intent + every slot (the corpus's definition of right), overall and on the
  held-out entries (written after the parser's rules were last changed), with the wrong ones listed;
* latency of :func:`backend.questions.parser.parse` per question (p50, p95, max over ``--runs`` passes), the
  first (cold) parse apart — it loads dateparser's Portuguese data once per process;
* the raw limit measured in the same run: one pass of a single compiled regular expression (every cue pattern
  of the parser in one alternation) over the same lower-cased strings, i.e. the least any pattern-based parser
  must spend per question. Target: parse p95 < 20 ms. Run:

    .venv/bin/python bench/questions.py [--runs 20]
"""

# ruff: noqa: E402  (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from bench/: keep bench/ off the import path, the repository root on it.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
sys.path.insert(0, str(_ROOT))

import argparse
import re
import statistics
import time

from backend.questions.parser import CUES, parse
from tests.questions.corpus import load, mismatches


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="passes over the corpus for the latency figures")
    args = ap.parse_args()
    corpus = load()
    questions = [e["q"] for e in corpus.entries]

    t0 = time.perf_counter()
    parse(questions[0], corpus.agora, corpus.vocabulario)
    cold = time.perf_counter() - t0

    wrong, wrong_intent = [], 0
    held = {e["q"] for e in corpus.held_out}
    held_wrong = 0
    for entry in corpus.entries:
        diff = mismatches(entry, parse(entry["q"], corpus.agora, corpus.vocabulario))
        if diff:
            wrong.append((entry["q"], diff))
            wrong_intent += "intencao" in diff
            held_wrong += entry["q"] in held
    n = len(corpus.entries)
    print(f"corpus: {n} questions, {len({e['intencao'] for e in corpus.entries})} intents")
    print(f"  intent accuracy          {n - wrong_intent}/{n} = {(n - wrong_intent) / n:.1%}")
    print(f"  intent + slots accuracy  {n - len(wrong)}/{n} = {(n - len(wrong)) / n:.1%}")
    if held:
        right = len(held) - held_wrong
        print(f"  held-out (intent+slots)  {right}/{len(held)} = {right / len(held):.1%}")
    for q, diff in wrong:
        print(f"  wrong: {q!r}: " + ", ".join(f"{k} expected {a!r} got {b!r}" for k, (a, b) in diff.items()))

    parse_times: list[float] = []
    for _ in range(args.runs):
        for q in questions:
            t = time.perf_counter()
            parse(q, corpus.agora, corpus.vocabulario)
            parse_times.append(time.perf_counter() - t)
    raw = re.compile("|".join(f"(?:\\b(?:{p})\\b)" for _, p, _ in CUES))
    lowered = [q.lower() for q in questions]
    raw_times: list[float] = []
    for _ in range(args.runs):
        for q in lowered:
            t = time.perf_counter()
            raw.findall(q)
            raw_times.append(time.perf_counter() - t)

    p50, p95 = statistics.median(parse_times), quantile(parse_times, 0.95)
    r50, r95 = statistics.median(raw_times), quantile(raw_times, 0.95)
    print(f"latency over {len(parse_times)} parses ({args.runs} passes):")
    print(f"  first parse of the process (cold)  {ms(cold)}")
    print(f"  parse                  p50 {ms(p50)}  p95 {ms(p95)}  max {ms(max(parse_times))}")
    print(f"  raw: one regex pass    p50 {ms(r50)}  p95 {ms(r95)}")
    print(f"  parse / raw            p50 x{p50 / r50:.0f}  p95 x{p95 / r95:.0f}   (target: parse p95 < 20 ms)")


if __name__ == "__main__":
    main()
