#!/usr/bin/env python3
"""Independent check of what linesentry published: reads `topic<TAB>payload` lines (as
mosquitto_sub -F '%t\t%p' writes them), verifies every batch's Ed25519 signature with the
gateway's public key and every event's hash chain, and prints a JSON summary.

Canonical JSON and the signed message are re-implemented here from the documentation in
crates/event/src/integrity.rs, not shared with the Rust code."""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.exceptions import InvalidSignature


def canonical(event):
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main():
    path, public_key_b64 = sys.argv[1], sys.argv[2]
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    key_id = hashlib.sha256(key.public_bytes_raw()).hexdigest()[:16]
    messages = bad_signatures = wrong_key = events_total = 0
    first = {}          # id -> event, first occurrence
    hashes = {}         # seq -> hash of the event with that seq
    per_topic_last = {}  # topic -> last seq seen (first occurrences only)
    order_violations = []
    topics_ok = True
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" not in line:
                continue
            topic, payload = line.split("\t", 1)
            if topic.endswith("/status"):
                continue
            messages += 1
            env = json.loads(payload)
            if env["key_id"] != key_id:
                wrong_key += 1
            hs = [hashlib.sha256(canonical(e)).hexdigest() for e in env["events"]]
            msg = ("linesentry-batch-v1\n" + env["gateway_id"] + "\n" + env["key_id"] + "\n"
                   + "".join(h + "\n" for h in hs)).encode()
            try:
                key.verify(base64.b64decode(env["signature"]), msg)
            except InvalidSignature:
                bad_signatures += 1
                continue
            for e, h in zip(env["events"], hs):
                events_total += 1
                want = "/events/%s/%s" % (e["severity"], e["event_type"])
                if not topic.endswith(want):
                    topics_ok = False
                hashes[e["seq"]] = h
                if e["id"] in first:
                    continue
                first[e["id"]] = e
                last = per_topic_last.get(topic)
                if last is not None and e["seq"] <= last:
                    order_violations.append([topic, last, e["seq"]])
                per_topic_last[topic] = e["seq"]
    chain_checked = chain_broken = 0
    for e in first.values():
        prev = hashes.get(e["seq"] - 1)
        if prev is None or e["prev_hash"] is None:
            continue
        chain_checked += 1
        if e["prev_hash"] != prev:
            chain_broken += 1
    summary = {
        "messages": messages,
        "bad_signatures": bad_signatures,
        "wrong_key": wrong_key,
        "events_received": events_total,
        "unique_events": len(first),
        "topics_ok": topics_ok,
        "order_violations": order_violations[:20],
        "chain_checked": chain_checked,
        "chain_broken": chain_broken,
        "test_ns": sorted(e["event_data"]["test_n"] for e in first.values()
                          if "test_n" in e["event_data"]),
        "types": sorted({e["event_type"] for e in first.values()}),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
