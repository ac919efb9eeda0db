#!/usr/bin/env python3
"""Writes the hand-made seed inputs into fuzz/corpus/<target>/seed-*.

Valid signatures are computed here independently (hmac/hashlib) with the same fixed keys as
the targets, so the fuzzer starts from inputs that pass verification. Run from anywhere;
re-running overwrites the seeds and leaves the fuzzer's own corpus files alone.
"""
import base64, hashlib, hmac, os, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT.parent / "config" / "hermod-conf.yml"


def put(target, name, data):
    d = ROOT / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def nul(*parts):
    return b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)


def hm(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


DEV = "dev_00112233445566778899aabbccddeeff"
CMD = "cmd_42424242424242424242424242424242"

# 1. command_json
for i, body in enumerate([
    '{"user_id":"alice","timeout":120,"lifespan":86400}',
    '{"device_id":"%s","payload":{"text":"Sign in to Acme?","digest":"q83v","n":1.5e3,"list":[1,true,null]}}' % DEV,
    '{"user_id":"J\\u00fcrgen \\u00d8deg\\u00e5rd","payload":{}}',
    '{"since":"2026-01-01T00:00:00Z","until":"2026-02-01T00:00:00.000Z"}',
    "x-door.open", "authenticate", DEV, CMD, "alice@example.com",
]):
    put("command_json", str(i), body)

# 2. device_response: device, timestamp, nonce, signature, method, path, now, body
server_key = b"hermod fuzz server key, fixed"
secret = hm(server_key, b"hermod/device-secret/v1\n" + DEV.encode())
for i, (method, path, ts, nonce, body) in enumerate([
    ("POST", "/ms/commands/%s/response" % CMD, "1790000000", "nonce-0123456789abcdef",
     '{"result":"approved","data":{"signature":"MEUCIQ"}}'),
    ("POST", "/ms/enrol", "1790000100", "AbCdEfGhIjKlMnOp_-",
     '{"token":"%s.abc","name":"Pixel 9","data":{"public_key":"MCow"}}' % CMD),
    ("GET", "/ms/mailbox?cursor=3&wait=30", "1790000000", "n" * 64, ""),
]):
    canonical = "\n".join(["HERMOD-DEVICE-V1", DEV, method.upper(), path, ts, nonce,
                           hashlib.sha256(body.encode()).hexdigest()])
    sig = base64.b64encode(hm(secret, canonical.encode())).decode()
    put("device_response", str(i), nul(DEV, ts, nonce, sig, method, path, ts, body))
put("device_response", "declined", nul(DEV, "17", "short", "c2ln", "POST", "/ms/x", "-1",
                                        '{"result":"declined"}'))

# 3. timestamps_nonces
for i, s in enumerate(["1790000000", "0", "999999999999", "01790000000", "-5", "+17",
                       "nonce-0123456789abcdef", "A" * 16, "a" * 64, "a" * 65]):
    put("timestamps_nonces", str(i), s)

# 4. enrolment_link
legacy_key = b"hermod fuzz server key, fixed!!!"  # the targets' KEY and the ring's legacy key
tag = base64.urlsafe_b64encode(hm(legacy_key, b"hermod/enrolment-token/v1\n" + CMD.encode())).decode().rstrip("=")
token = f"{CMD}.{tag}"
# The ring's current key k2: HKDF-SHA256(salt "hermod/server-key/v2", info "enrolment-token\nk2\n").
k2 = b"0123456789abcdef0123456789abcdef"
prk = hm(b"hermod/server-key/v2", k2)
okm = hm(prk, b"enrolment-token\nk2\n" + b"\x01")
k2_tag = base64.urlsafe_b64encode(hm(okm, CMD.encode())).decode().rstrip("=")
put("enrolment_link", "token-k2", f"{CMD}.k2.{k2_tag}")
link = "hermod://enrol?ms=https%3A%2F%2Fmsg.example.com%3A8443%2Fhermod%2Frest%2Fms&token=" + token
put("enrolment_link", "token", token)
put("enrolment_link", "link", link)
put("enrolment_link", "bankid-like", "bankid:///?autostarttoken=7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6&redirect=null")
put("enrolment_link", "bad-escape", "hermod://enrol?ms=%zz&token=t")

# 5. config_yaml: the sample config and one that names every section.
put("config_yaml", "sample", CONFIG.read_text())
put("config_yaml", "full", """\
server:
  address: 0.0.0.0
  port: 8443
  max-connections: 10000
  max-connections-per-ip: 1000
  header-read-timeout: 10.0
  body-read-timeout: 15.0
  shutdown-grace: 10.0
  ssl:
    enabled: false
publicUrl: https://msg.example.com/hermod/rest/ms
database:
  url: postgres://hermod@db/hermod
  max-connections: 16
  acquire-timeout: 1.5
  startup-wait: 60
commands:
  default-timeout: 120
  default-lifespan: 86400
  max-wait: 60
  sweep-interval-ms: 1000
devices:
  signature-window: 300
callbacks:
  retry-schedule: [5, 30, 120, 600.5, 1800, 3600, 10800, 21600, 43200, 43200]
  jitter: 0.2
  request-timeout: 15
  concurrency: 64
  per-receiver-concurrency: 16
  per-tenant-concurrency: 32
  overload-pause: 60
edge:
  secret: 0123456789abcdef0123456789abcdef
admin:
  operator-key: 0123456789abcdef0123456789abcdef
  rate-limit: 20
  auth-failure-summary: 60
egress:
  allow: [10.20.0.0/16, receiver.internal, "fd00::/8", 192.0.2.7]
  hosts:
    receiver.internal: 10.20.0.5
long-polls:
  max: 8000
  per-device: 2
  per-client: 200
retention:
  interval: 60
  batch: 1000
  callbacks: 604800
  dead-callbacks: 2592000
  audit: 31536000
  revoked-devices: 2592000
server-key: c2VydmVyIGtleSBvZiBhdCBsZWFzdCAzMiBieXRlcyEhISE=
max-body-bytes: 65536
generate-client-page: false
cacerts: cacerts
allowed-clients:
  - client-id: idm
    key: 446020134ee8422db5769fbef9104a4157728610236d4dd1a4b37f935dab410a
    group: smartid
    callback-url: https://idm.example.com/ws/hermod
    callback-basic-auth: "user:pass"
    callback-signing-secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]
""")
put("config_yaml", "empty", "{}\n")

# 6. admin_bodies
for i, body in enumerate([
    '{"id":"acme","name":"Acme Corp","quotas":{"max_commands_per_second":50,"max_devices":1000}}',
    '{"id":"tiny"}',
    '{"max_commands_per_second":null,"max_devices":5}',
    '{"name":"smartid"}',
    '{"name":"idm","group":"smartid","callback_url":"http://idm.example.com/cb","callback_basic_auth":"u:p"}',
    '{"callback_url":null,"callback_basic_auth":"u:p","callback_enabled":true}',
    '{}',
    "gw_2-prod",
]):
    put("admin_bodies", str(i), body)

# 7. webhook_header: secret, msg id, timestamp, signature header, now, payload
spec_key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
msg, ts, payload = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", '{"test": 2432232314}'
sig = "v1," + base64.b64encode(hm(spec_key, f"{msg}.{ts}.{payload}".encode())).decode()
put("webhook_header", "spec", nul("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", msg, ts, sig, ts, payload))
other = base64.b64encode(hm(bytes([7] * 32), f"{msg}.{ts}.{payload}".encode())).decode()
put("webhook_header", "rotation", nul("whsec_" + base64.b64encode(bytes(range(32))).decode(), msg, ts,
                                       f"v1,AAAA {sig} v1,{other}", "1614265630", payload))
put("webhook_header", "stale", nul("whsec_c2hvcnQ=", "", " 17 ", "v1, v2,x", "1614265330", ""))

# 8. edge_assertion: header, method, path, now, body
edge_secret = b"edge and backend share this secret"
for i, (caller, method, path, body) in enumerate([
    ("client:acme.idm", "POST", "/command/authenticate", '{"user_id":"alice"}'),
    ("device:" + DEV, "GET", "/ms/mailbox?cursor=0&wait=30", ""),
    ("anonymous", "POST", "/ms/enrol", '{"token":"t"}'),
    ("edge", "GET", "/internal/clients/acme.idm", ""),
]):
    nonce, t = "0123456789abcdef0123", "1790000000"
    canonical = f"HERMOD-EDGE-V1\n{method}\n{path}\n{t}\n{nonce}\n{caller}\n{hashlib.sha256(body.encode()).hexdigest()}"
    tag = base64.b64encode(hm(edge_secret, canonical.encode())).decode()
    put("edge_assertion", str(i), nul(f"v1,{t},{nonce},{caller},{tag}", method, path, "1790000010", body))
put("edge_assertion", "extreme-now", nul("v1,1790000000,0123456789abcdef0123,anonymous,AAAA", "POST",
                                         "/", b"\x00\x00\x00\x00\x00\x00\x00\x80", ""))

# 9. client_credential
tok = base64.b64encode(b"idm:446020134ee8").decode()
for i, s in enumerate([tok, "Basic " + tok, "basic  " + tok, "Bearer " + tok,
                       base64.b64encode(b"acme.idm:Zm9vYmFyYmF6cXV4cXV1eA-_").decode(), "OmtleQ=="]):
    put("client_credential", str(i), s)

# 10. key_ring
put("key_ring", "two", "legacy aGVybW9kIGZ1enogc2VydmVyIGtleSwgZml4ZWQhISE=   # before key ids\n"
    "# rotated in December\nk2 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
put("key_ring", "one", "k-2026-12 " + base64.b64encode(bytes(range(48))).decode() + "\r\n")
put("key_ring", "dup", "a AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\na AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
