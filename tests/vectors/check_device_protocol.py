#!/usr/bin/env python3
"""Second signer for Hermod's device-protocol test vectors (issue 17).

An independent implementation of docs/PROTOCOL.md, written from the document alone
(not from the Rust code) in Python 3.11 with only the standard library: it recomputes
every derivation and signature in shared/tests/vectors/device-protocol.json and
compares it with the recorded value.

Run from the repository root:

    python3 tests/vectors/check_device_protocol.py [path/to/device-protocol.json]

It prints one line per section with the number of vectors checked and exits 0 when
all pass; on the first mismatch it names the vector and exits 1. A section (top-level
key) or a vector field it does not know also fails, so nothing new goes unchecked.
"""

import base64
import hashlib
import hmac
import json
import re
import sys
from pathlib import Path

DEFAULT_VECTORS = (Path(__file__).resolve().parent / "../../shared/tests/vectors/device-protocol.json").resolve()

# PROTOCOL.md, "Key derivation (for servers and the edge)".
HKDF_SALT = b"hermod/server-key/v2"
LEGACY_KEY_ID = "legacy"
LEGACY_SECRET_PREFIX = b"hermod/device-secret/v1\n"
LEGACY_TOKEN_PREFIX = b"hermod/enrolment-token/v1\n"
# PROTOCOL.md, "Signed requests".
CANONICAL_TAG = "HERMOD-DEVICE-V1"
DEVICE_ID_RE = re.compile(r"dev_[0-9a-f]{32}")
TIMESTAMP_RE = re.compile(r"0|[1-9][0-9]*")
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
METHOD_RE = re.compile(r"[A-Z]+")


class Mismatch(Exception):
    pass


# --- primitives ---------------------------------------------------------------------

def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF per RFC 5869 (extract then expand) with SHA-256."""
    if length > 255 * 32:
        raise ValueError("HKDF output too long")
    prk = hmac_sha256(salt if salt else b"\0" * 32, ikm)
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        okm += block
        counter += 1
    return okm[:length]


def b64(data: bytes) -> str:
    """Standard base64, padded."""
    return base64.b64encode(data).decode("ascii")


def b64url_nopad(data: bytes) -> str:
    """base64url (RFC 4648 section 5) without '=' padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64decode_strict(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the protocol ------------------------------------------------------------------

def parse_key_ring(text: str) -> dict[str, bytes]:
    """One key per line, `<id> <base64>`; blank lines ignored."""
    ring: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise Mismatch(f"key_ring line {number}: expected '<id> <base64>', got {line!r}")
        key_id, key_b64 = parts
        if key_id in ring:
            raise Mismatch(f"key_ring line {number}: duplicate key id {key_id!r}")
        ring[key_id] = b64decode_strict(key_b64)
    if not ring:
        raise Mismatch("key_ring: no keys")
    return ring


def device_secret(ring: dict[str, bytes], key_id: str, device_id: str) -> bytes:
    key = ring[key_id]
    if key_id == LEGACY_KEY_ID:
        return hmac_sha256(key, LEGACY_SECRET_PREFIX + device_id.encode())
    info = f"device-secret\n{key_id}\n{device_id}".encode()
    return hkdf_sha256(HKDF_SALT, key, info, 32)


def enrolment_token(ring: dict[str, bytes], key_id: str, command_id: str) -> str:
    key = ring[key_id]
    if key_id == LEGACY_KEY_ID:
        mac = hmac_sha256(key, LEGACY_TOKEN_PREFIX + command_id.encode())
        return f"{command_id}.{b64url_nopad(mac)}"
    mac_key = hkdf_sha256(HKDF_SALT, key, f"enrolment-token\n{key_id}\n".encode(), 32)
    mac = hmac_sha256(mac_key, command_id.encode())
    return f"{command_id}.{key_id}.{b64url_nopad(mac)}"


def canonical_string(device_id: str, method: str, path: str, timestamp: str,
                     nonce: str, body: bytes) -> str:
    return "\n".join([
        CANONICAL_TAG,
        device_id,
        method.upper(),
        path,
        timestamp,
        nonce,
        sha256_hex(body),
    ])


def sign(secret: bytes, canonical: str) -> str:
    return b64(hmac_sha256(secret, canonical.encode("utf-8")))


# --- checking ----------------------------------------------------------------------

def expect(what: str, got, want) -> None:
    if got != want:
        raise Mismatch(f"{what}: computed {got!r}, vector says {want!r}")


def check_fields(where: str, vector: dict, known: set[str]) -> None:
    if not isinstance(vector, dict):
        raise Mismatch(f"{where}: not an object")
    unknown = set(vector) - known
    if unknown:
        raise Mismatch(f"{where}: field(s) this checker does not check: {sorted(unknown)}")
    missing = known - set(vector)
    if missing:
        raise Mismatch(f"{where}: missing field(s) {sorted(missing)}")


def check_derivations(doc: dict, ring: dict[str, bytes]) -> int:
    device_id, command_id = doc["device_id"], doc["command_id"]
    for i, v in enumerate(doc["derivations"]):
        check_fields(f"derivations[{i}]", v, {"key_id", "device_secret", "enrolment_token"})
        where = f"derivations[{i}] (key_id {v['key_id']!r})"
        if v["key_id"] not in ring:
            raise Mismatch(f"{where}: key id not in key_ring")
        expect(f"{where} device_secret",
               b64(device_secret(ring, v["key_id"], device_id)), v["device_secret"])
        expect(f"{where} enrolment_token",
               enrolment_token(ring, v["key_id"], command_id), v["enrolment_token"])
    return len(doc["derivations"])


def check_signed_requests(doc: dict, ring: dict[str, bytes]) -> int:
    device_id = doc["device_id"]
    fields = {"key_id", "method", "path", "timestamp", "nonce", "body", "signature", "canonical"}
    for i, v in enumerate(doc["signed_requests"]):
        check_fields(f"signed_requests[{i}]", v, fields)
        where = f"signed_requests[{i}] ({v['method']} {v['path']}, key_id {v['key_id']!r})"
        if v["key_id"] not in ring:
            raise Mismatch(f"{where}: key id not in key_ring")
        timestamp = str(v["timestamp"])
        if not TIMESTAMP_RE.fullmatch(timestamp):
            raise Mismatch(f"{where}: timestamp {timestamp!r} is not unsigned decimal without leading zeros")
        if not NONCE_RE.fullmatch(v["nonce"]):
            raise Mismatch(f"{where}: nonce {v['nonce']!r} is not 16-64 of A-Z a-z 0-9 - _")
        if not METHOD_RE.fullmatch(v["method"]):
            raise Mismatch(f"{where}: method {v['method']!r} is not upper case")
        canonical = canonical_string(device_id, v["method"], v["path"], timestamp,
                                     v["nonce"], v["body"].encode("utf-8"))
        expect(f"{where} canonical", canonical, v["canonical"])
        secret = device_secret(ring, v["key_id"], device_id)
        expect(f"{where} signature", sign(secret, canonical), v["signature"])
    return len(doc["signed_requests"])


def check_qr_frames(doc: dict, ring: dict[str, bytes]) -> int:
    # PROTOCOL.md, "Approval": {prefix}.{token}.{t}.{hex(HMAC-SHA256(key = secret as UTF-8, msg = decimal t))}
    fields = {"prefix", "qr_start_token", "qr_start_secret", "t", "frame"}
    for i, v in enumerate(doc["qr_frames"]):
        check_fields(f"qr_frames[{i}]", v, fields)
        t = str(v["t"])
        if not TIMESTAMP_RE.fullmatch(t):
            raise Mismatch(f"qr_frames[{i}]: t {t!r} is not unsigned decimal without leading zeros")
        code = hmac.new(v["qr_start_secret"].encode("utf-8"), t.encode("ascii"), hashlib.sha256).hexdigest()
        expect(f"qr_frames[{i}] frame", f"{v['prefix']}.{v['qr_start_token']}.{t}.{code}", v["frame"])
    return len(doc["qr_frames"])


def check_verification_codes(doc: dict, ring: dict[str, bytes]) -> int:
    # PROTOCOL.md, "Approval": %04d of the big-endian integer of SHA-256(x)'s last two bytes, mod 10000.
    for i, v in enumerate(doc["verification_codes"]):
        check_fields(f"verification_codes[{i}]", v, {"challenge", "code"})
        digest = hashlib.sha256(bytes.fromhex(v["challenge"])).digest()
        expect(f"verification_codes[{i}] code", "%04d" % (int.from_bytes(digest[-2:], "big") % 10000), v["code"])
    return len(doc["verification_codes"])


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_VECTORS
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"FAIL: cannot read {path}: {e}", file=sys.stderr)
        return 1

    # Every top-level key must be handled here: either a section checked below or a
    # shared input. A new section makes the script fail until it is checked.
    inputs = {"description", "key_ring", "device_id", "command_id"}
    sections = {
        "derivations": check_derivations,
        "signed_requests": check_signed_requests,
        "qr_frames": check_qr_frames,
        "verification_codes": check_verification_codes,
    }
    try:
        if not isinstance(doc, dict):
            raise Mismatch("top level is not an object")
        unknown = set(doc) - inputs - set(sections)
        if unknown:
            raise Mismatch(f"section(s) this checker does not check: {sorted(unknown)}")
        missing = (inputs | set(sections)) - set(doc)
        if missing:
            raise Mismatch(f"missing section(s): {sorted(missing)}")
        if not DEVICE_ID_RE.fullmatch(doc["device_id"]):
            raise Mismatch(f"device_id {doc['device_id']!r} is not dev_ + 32 lowercase hex")
        ring = parse_key_ring(doc["key_ring"])
        print(f"key_ring: {len(ring)} keys parsed ({', '.join(ring)})")
        for name, check in sections.items():
            if not isinstance(doc[name], list) or not doc[name]:
                raise Mismatch(f"{name}: expected a non-empty list")
            print(f"{name}: {check(doc, ring)} checked, all match")
    except Mismatch as e:
        print(f"FAIL ({path}): {e}", file=sys.stderr)
        return 1
    print(f"OK: all vectors in {path} match")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
