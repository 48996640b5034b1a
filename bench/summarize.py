"""Prints the markdown table of one bench/run.sh run: best round per scenario, and ratios."""
import json
import sys
from pathlib import Path

results = Path(sys.argv[1])
rows = [json.loads(l) for l in (results / "results.jsonl").read_text().splitlines() if l.strip()]
best = {}
for r in rows:
    if r["scenario"] not in best or r["rps"] > best[r["scenario"]]["rps"]:
        best[r["scenario"]] = r
print("| scenario | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name, r in sorted(best.items()):
    print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} | {r['socket_errors']} |")
for kind in ("token", "introspect"):
    pc, op = best.get(f"portcullis/{kind}"), best.get(f"oidc-provider/{kind}")
    if pc and op and op["rps"] > 0:
        print(f"\n{kind}: Portcullis / oidc-provider = {pc['rps'] / op['rps']:.1f}x throughput")
