#!/usr/bin/env python3
"""Standalone verifier of a Gantry audit log (see docs/audit-log.md).

usage: verify-audit.py [--pubkey agent.pub] [--witness witness.json] DIR_OR_FILE...

A directory is read as its audit-*.jsonl files in name order. Prints "ok: ..." and exits 0,
or prints the first bad seq and why and exits 1 (2 for a usage or input error). Checkpoint
signatures are checked with --pubkey if the `cryptography` package is importable.
"""
import argparse, base64, hashlib, json, os, sys

GENESIS = "0" * 64
CHECKPOINT_TYPE = b"application/vnd.gantry.audit-checkpoint.v1"
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
HEX = set("0123456789abcdef")


class Bad(Exception):
    def __init__(self, seq, why):
        super().__init__(f"seq {seq}: {why}")


def pae(typ, body):
    return b"DSSEv1 %d %s %d %s" % (len(typ), typ, len(body), body)


def read_pubkey(path):
    text = open(path).read()
    b64 = "".join(l for l in text.splitlines() if l and not l.startswith("-----"))
    der = base64.b64decode(b64, validate=True)
    if "BEGIN PUBLIC KEY" not in text or len(der) != 44 or not der.startswith(SPKI_PREFIX):
        sys.exit(f"error: {path} is not an Ed25519 public key (BEGIN PUBLIC KEY)")
    return der[12:]


def log_lines(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, n) for n in os.listdir(p)
                            if n.startswith("audit-") and n.endswith(".jsonl"))
        else:
            files.append(p)
    if not files:
        # A wrong path must not read as a clean log.
        sys.exit(f"error: no audit log in {' '.join(paths)}: no audit-*.jsonl file")
    for f in files:
        pieces = open(f, "rb").read().split(b"\n")
        if pieces[-1] == b"":
            pieces.pop()  # the file ends with a newline; a last piece without one is torn
        yield from pieces


def is_hash(v):
    return isinstance(v, str) and len(v) == 64 and set(v) <= HEX


def verify(lines, raw_key, verify_sig, witness):
    prev, seq, checkpoints, last_cp, unsealed = GENESIS, 0, 0, None, 0
    key_id = hashlib.sha256(raw_key).hexdigest() if raw_key else None
    for line in lines:
        expected = seq + 1
        try:
            e = json.loads(line.decode("utf-8"), parse_constant=lambda c: 1 / 0)
        except Exception:
            e = None
        if not isinstance(e, dict):
            raise Bad(expected, "the line is not a JSON object (torn or corrupted)")
        for field, ok in (("seq", lambda v: type(v) is int and v >= 0),
                          ("ts", lambda v: isinstance(v, str)),
                          ("prev", is_hash), ("event", lambda v: isinstance(v, str))):
            if field not in e:
                raise Bad(expected, f"missing field {field!r}")
            if not ok(e[field]):
                raise Bad(expected, f"field {field!r} is malformed")
        if e["seq"] != expected:
            raise Bad(expected, f"expected seq {expected} here, found seq {e['seq']}"
                      " (an entry was deleted, inserted or moved)")
        if e["prev"] != prev:
            if seq == 0:
                raise Bad(1, "the first entry's prev must be 64 zeros")
            raise Bad(seq, f"entry {seq} was altered: its hash does not match the prev"
                           f" recorded by entry {expected}")
        if witness and expected == witness[0] and line != witness[1]:
            raise Bad(expected, "the entry differs from the checkpoint the controller witnessed")
        if e["event"] == "checkpoint":
            for field in ("key_id", "sig"):
                if not isinstance(e.get(field), str):
                    raise Bad(expected, f"checkpoint without a string {field!r}")
            try:
                sig = base64.b64decode(e["sig"], validate=True)
            except ValueError:
                sig = b""
            if len(sig) != 64:
                raise Bad(expected, "checkpoint 'sig' is not base64 of 64 bytes")
            if key_id and e["key_id"] != key_id:
                raise Bad(expected, f"checkpoint signed by key {e['key_id']}, not the agent's key")
            if key_id and verify_sig and not verify_sig(raw_key, sig, pae(CHECKPOINT_TYPE, prev.encode())):
                raise Bad(expected, "checkpoint signature does not verify under the agent's key")
            checkpoints, last_cp, unsealed = checkpoints + 1, expected, 0
        else:
            unsealed += 1
        seq, prev = expected, hashlib.sha256(line).hexdigest()
    if witness and seq < witness[0]:
        raise Bad(witness[0], f"the log ends at seq {seq}, before the witnessed checkpoint")
    return seq, checkpoints, last_cp, unsealed, prev


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pubkey", help="the agent's audit key (SPKI PEM)")
    ap.add_argument("--witness", help='JSON {"seq": N, "line": "..."} of a witnessed checkpoint')
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    raw_key = read_pubkey(a.pubkey) if a.pubkey else None
    verify_sig = None
    if raw_key:
        try:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            def verify_sig(raw, sig, msg):
                try:
                    Ed25519PublicKey.from_public_bytes(raw).verify(sig, msg)
                    return True
                except Exception:
                    return False
        except ImportError:
            print("note: python package 'cryptography' not found: checkpoint signatures are "
                  "skipped (key ids are still compared)", file=sys.stderr)
    witness = None
    if a.witness:
        w = json.load(open(a.witness))
        witness = (w["seq"], w["line"].encode("utf-8"))
    try:
        seq, cps, last_cp, unsealed, last_hash = verify(log_lines(a.paths), raw_key, verify_sig, witness)
    except Bad as bad:
        print(bad)
        return 1
    sigs = "signatures checked" if verify_sig else "signatures NOT checked"
    print(f"ok: {seq} entries, {cps} checkpoints (last at seq {last_cp}, {sigs}), "
          f"{unsealed} entries after the last checkpoint, last hash {last_hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
