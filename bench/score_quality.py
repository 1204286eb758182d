#!/usr/bin/env python3
"""Measure the offline focus scorer on a labelled split.

    python bench/score_quality.py                  # held-out split (the default)
    python bench/score_quality.py --split fresh    # 16 newer authors the shipped model never saw
    python bench/score_quality.py --split train --errors

Reads ``bench/data/turns_<split>.jsonl`` (``{"id","context","text","label"}``) and
``bench/data/conversations_<split>.jsonl`` (``{"id","turns","labels","gold_score","gold_verdict"}``) and
prints: per-class precision / recall / F1, macro-F1 and the confusion matrix over all labelled turns (the
user turns inside conversations count as turns too, each read with the conversation before it as context);
the Spearman correlation of focus_score with gold_score and the verdict accuracy over conversations; and
the throughput in turns/s on one core (the whole turn set scored repeatedly; the memos of whole inputs are
cleared before every pass, so no turn is ever answered from a cache; per-token memos stay warm, as in a
running bot).
``--errors`` lists the misclassified items. Plain stdlib.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.scoring.base import LABELS, Turn  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as exc:
                    raise SystemExit(f"{path}:{n}: invalid JSON: {exc}")
    return out


SPLITS = ("train", "heldout", "fresh")


def splits_for(split: str) -> list[str]:
    return list(SPLITS) if split == "all" else [split]


def load(split: str, data_dir: Path = DATA) -> tuple[list[dict], list[dict]]:
    """(turn items, conversations) of a split; missing files count as empty."""
    turns: list[dict] = []
    convs: list[dict] = []
    for s in splits_for(split):
        tp, cp = data_dir / f"turns_{s}.jsonl", data_dir / f"conversations_{s}.jsonl"
        if tp.exists():
            turns += read_jsonl(tp)
        if cp.exists():
            convs += read_jsonl(cp)
    return turns, convs


def _ctx(items) -> list[Turn]:
    return [Turn(role=t["role"], text=t["text"]) for t in (items or [])]


def turn_examples(turns: list[dict], convs: list[dict]) -> list[tuple[str, str, list[Turn], str]]:
    """(id, text, context, gold label) for every labelled turn, conversation user turns included."""
    ex = [(str(t.get("id")), t["text"], _ctx(t.get("context")), t["label"]) for t in turns]
    for c in convs:
        ts = _ctx(c["turns"])
        labels = c.get("labels") or []
        k = 0
        for i, t in enumerate(ts):
            if t.role != "user":
                continue
            if k < len(labels):
                ex.append((f"{c.get('id')}#{i}", t.text, ts[:i], labels[k]))
            k += 1
    return ex


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            r[order[k]] = avg
        i = j + 1
    return r


def spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def classification(gold: list[str], pred: list[str]) -> dict:
    conf = {g: {p: 0 for p in LABELS} for g in LABELS}
    for g, p in zip(gold, pred):
        conf.setdefault(g, {q: 0 for q in LABELS})[p] += 1
    per = {}
    for c in LABELS:
        tp = conf[c][c]
        fp = sum(conf[g][c] for g in conf if g != c)
        fn = sum(conf[c][p] for p in LABELS if p != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    macro = sum(per[c]["f1"] for c in LABELS) / len(LABELS)
    acc = sum(1 for g, p in zip(gold, pred) if g == p) / max(len(gold), 1)
    return {"per_class": per, "macro_f1": macro, "accuracy": acc, "confusion": conf, "n": len(gold)}


def evaluate(split: str = "heldout", scorer=None, data_dir: Path = DATA) -> dict:
    """All quality figures of a split as a dict (used by the tests too)."""
    if scorer is None:
        from bot.scoring import default_scorer

        scorer = default_scorer()
    turns, convs = load(split, data_dir)
    ex = turn_examples(turns, convs)
    preds = [scorer.score_turn(text, ctx) for _, text, ctx, _ in ex]
    cls = classification([g for *_, g in ex], [p.label for p in preds])
    errors = [
        {"id": i, "gold": g, "pred": p.label, "conf": p.confidence, "reasons": list(p.reasons), "text": t,
         "partner": next((c.text for c in reversed(ctx) if c.role == "partner"), None)}
        for (i, t, ctx, g), p in zip(ex, preds)
        if p.label != g
    ]
    got, gold, vright, conv_rows = [], [], 0, []
    for c in convs:
        cs = scorer.score_conversation(_ctx(c["turns"]))
        got.append(cs.focus_score)
        gold.append(c["gold_score"])
        ok = cs.verdict == c.get("gold_verdict")
        vright += ok
        conv_rows.append({"id": c.get("id"), "gold": c["gold_score"], "got": cs.focus_score,
                          "gold_verdict": c.get("gold_verdict"), "verdict": cs.verdict})
    return {
        "split": split,
        "turns": cls,
        "errors": errors,
        "conversations": {
            "n": len(convs),
            "spearman": spearman(got, gold) if convs else float("nan"),
            "verdict_accuracy": vright / len(convs) if convs else float("nan"),
            "mae": sum(abs(a - b) for a, b in zip(got, gold)) / len(convs) if convs else float("nan"),
            "rows": conv_rows,
        },
        "examples": ex,
    }


def throughput(ex, scorer_factory, min_seconds: float = 2.0) -> float:
    """Turns per second on one core; whole-input memos are cleared before every pass (see module doc)."""
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    from bot.scoring import intents as _intents

    scorer = scorer_factory()
    n = 0
    t0 = time.perf_counter()
    while True:
        _intents.clear_caches()
        for _, text, ctx, _ in ex:
            scorer.score_turn(text, ctx)
        n += len(ex)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=[*SPLITS, "all"], default="heldout",
                    help="heldout: written independently, never tuned on; fresh: newer authors kept out of "
                         "training as a second, larger check (see docs/scorer.md)")
    ap.add_argument("--errors", action="store_true", help="print the misclassified items")
    ap.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    from bot.scoring import default_scorer
    from bot.scoring.offline import OfflineScorer

    res = evaluate(args.split, default_scorer())
    ex = res["examples"]
    if not ex and not res["conversations"]["n"]:
        print(f"no data for split {args.split!r} in {DATA}", file=sys.stderr)
        return 1
    tps = None if args.no_speed or not ex else throughput(ex, OfflineScorer)
    cls, conv = res["turns"], res["conversations"]
    if args.json:
        print(json.dumps({"split": args.split, "n_turns": cls["n"], "macro_f1": cls["macro_f1"],
                          "accuracy": cls["accuracy"], "confusion": cls["confusion"],
                          "per_class": cls["per_class"], "n_conversations": conv["n"],
                          "spearman": conv["spearman"], "verdict_accuracy": conv["verdict_accuracy"],
                          "focus_mae": conv["mae"], "turns_per_s": tps}))
        return 0
    print(f"split: {args.split}   turns: {cls['n']}   conversations: {conv['n']}")
    print()
    print(f"{'label':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
    for c in LABELS:
        p = cls["per_class"][c]
        print(f"{c:<12} {p['precision']:>9.3f} {p['recall']:>7.3f} {p['f1']:>6.3f} {p['support']:>8}")
    print(f"\nmacro-F1: {cls['macro_f1']:.3f}   accuracy: {cls['accuracy']:.3f}")
    print("\nconfusion (rows = gold, columns = predicted):")
    print(" " * 12 + "".join(f"{c:>13}" for c in LABELS))
    for g in LABELS:
        print(f"{g:<12}" + "".join(f"{cls['confusion'][g][p]:>13}" for p in LABELS))
    print(f"\nconversations: Spearman(focus_score, gold_score) = {conv['spearman']:.3f}   "
          f"verdict accuracy = {conv['verdict_accuracy']:.3f}   mean |error| = {conv['mae']:.1f}")
    if tps is not None:
        print(f"\nthroughput: {tps:,.0f} turns/s on one core")
    if args.errors:
        print(f"\nmisclassified turns ({len(res['errors'])}):")
        for e in res["errors"]:
            print(f"- [{e['id']}] gold={e['gold']} pred={e['pred']} ({e['conf']:.2f}) {e['reasons']}")
            if e["partner"]:
                print(f"    partner: {e['partner']}")
            print(f"    user:    {e['text']}")
        print("\nconversations (gold vs got):")
        for r in conv["rows"]:
            mark = "" if r["verdict"] == r["gold_verdict"] else "   <-- verdict"
            print(f"- [{r['id']}] gold={r['gold']} ({r['gold_verdict']}) got={r['got']} ({r['verdict']}){mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
