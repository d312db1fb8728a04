#!/usr/bin/env python3
"""Independent check of proto/vectors/*.json from PROTOCOL.md alone, Python 3 standard library only.

Re-derives framing, usage subkeys, sealed objects (XSalsa20-Poly1305 written out here),
password keys (hashlib.scrypt), X25519 (RFC 7748 ladder written out here), the transport
handshake and its sealed frames, resumption (tickets, HS_RESUME with early data, HS_RESUMED
and the first frames after it), and the TIME_REP signed input. Ed25519 signatures are
not re-derived (no stdlib implementation); the Node tests check them.

    python3 proto/vectors/check.py
"""
import hashlib
import hmac
import json
import os
import struct
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
h2b = bytes.fromhex


def load(name):
    with open(os.path.join(HERE, name), encoding='utf-8') as f:
        return json.load(f)


# ------------------------------------------------------------------ Salsa20 / XSalsa20-Poly1305 (NaCl secretbox)

def _rotl(v, c):
    return ((v << c) & 0xffffffff) | (v >> (32 - c))


def _salsa_rounds(x):
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),
                           (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)):
            x[b] ^= _rotl((x[a] + x[d]) & 0xffffffff, 7)
            x[c] ^= _rotl((x[b] + x[a]) & 0xffffffff, 9)
            x[d] ^= _rotl((x[c] + x[b]) & 0xffffffff, 13)
            x[a] ^= _rotl((x[d] + x[c]) & 0xffffffff, 18)
    return x


SIGMA = struct.unpack('<4I', b'expand 32-byte k')


def _state(key, n16):
    k = struct.unpack('<8I', key)
    n = struct.unpack('<4I', n16)
    return [SIGMA[0], k[0], k[1], k[2], k[3], SIGMA[1], n[0], n[1], n[2], n[3], SIGMA[2], k[4], k[5], k[6], k[7], SIGMA[3]]


def hsalsa20(key, n16):
    x = _salsa_rounds(_state(key, n16))
    return struct.pack('<8I', x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])


def salsa20_stream(key, n8, length):
    out = bytearray()
    counter = 0
    while len(out) < length:
        s = _state(key, n8 + struct.pack('<Q', counter))
        x = _salsa_rounds(list(s))
        out += struct.pack('<16I', *((x[i] + s[i]) & 0xffffffff for i in range(16)))
        counter += 1
    return bytes(out[:length])


def poly1305(key, msg):
    r = int.from_bytes(key[:16], 'little') & 0x0ffffffc0ffffffc0ffffffc0fffffff
    s = int.from_bytes(key[16:], 'little')
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        block = msg[i:i + 16] + b'\x01'
        acc = (acc + int.from_bytes(block, 'little')) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, 'little')


def secretbox(msg, nonce, key):
    """NaCl crypto_secretbox_easy: tag(16) || ciphertext."""
    subkey = hsalsa20(key, nonce[:16])
    stream = salsa20_stream(subkey, nonce[16:], 32 + len(msg))
    ct = bytes(a ^ b for a, b in zip(msg, stream[32:]))
    return poly1305(stream[:32], ct) + ct


def secretbox_open(box, nonce, key):
    if len(box) < 16:
        return None
    subkey = hsalsa20(key, nonce[:16])
    stream = salsa20_stream(subkey, nonce[16:], 32 + len(box) - 16)
    tag, ct = box[:16], box[16:]
    if not hmac.compare_digest(poly1305(stream[:32], ct), tag):
        return None
    return bytes(a ^ b for a, b in zip(ct, stream[32:]))


# ------------------------------------------------------------------ X25519 (RFC 7748 §5)

P = 2 ** 255 - 19
A24 = 121665


def x25519(k, u):
    k = bytearray(k)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    k = int.from_bytes(k, 'little')
    x1 = int.from_bytes(u, 'little') & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = kt
        a, b = (x2 + z2) % P, (x2 - z2) % P
        aa, bb = a * a % P, b * b % P
        e = (aa - bb) % P
        c, d = (x3 + z3) % P, (x3 - z3) % P
        da, cb = d * a % P, c * b % P
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + A24 * e) % P
    if swap:
        x2, x3, z2, z3 = x3, x2, z3, z2
    out = (x2 * pow(z2, P - 2, P) % P).to_bytes(32, 'little')
    if out == bytes(32):
        raise ValueError('low-order point')
    return out


def x25519_base(k):
    return x25519(k, (9).to_bytes(32, 'little'))


# ------------------------------------------------------------------ HKDF, usage keys, seal

def hkdf_sha256(ikm, salt, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b'', b'', 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def usage_key(key, usage):
    return hmac.new(key, b'tessera/usage/v1' + struct.pack('>I', usage), hashlib.sha256).digest()


def seal(key, usage, plain, nonce):
    return nonce + secretbox(plain, nonce, usage_key(key, usage))


def open_sealed(key, usage, sealed):
    if len(sealed) < 40:
        return None
    return secretbox_open(sealed[24:], sealed[:24], usage_key(key, usage))


def frame(body):
    return struct.pack('>I', len(body)) + body


# ------------------------------------------------------------------ MessagePack (the subset of PROTOCOL.md §4)

def mp_encode(v):
    if v is True:
        return b'\xc3'
    if v is False:
        return b'\xc2'
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if 0 <= v <= 0xff:
            return b'\xcc' + bytes([v])
        if 0 <= v <= 0xffff:
            return b'\xcd' + struct.pack('>H', v)
        if 0 <= v <= 0xffffffff:
            return b'\xce' + struct.pack('>I', v)
        if -32 <= v < 0:
            return struct.pack('>b', v)
        return b'\xd3' + struct.pack('>q', v)  # Tessera's choice for |v| > 2^32 - 1
    if isinstance(v, str):
        b = v.encode('utf-8')
        n = len(b)
        head = bytes([0xa0 | n]) if n < 32 else b'\xd9' + bytes([n]) if n < 256 else b'\xda' + struct.pack('>H', n) if n < 65536 else b'\xdb' + struct.pack('>I', n)
        return head + b
    if isinstance(v, bytes):
        n = len(v)
        head = b'\xc4' + bytes([n]) if n < 256 else b'\xc5' + struct.pack('>H', n) if n < 65536 else b'\xc6' + struct.pack('>I', n)
        return head + v
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b'\xdc' + struct.pack('>H', n) if n < 65536 else b'\xdd' + struct.pack('>I', n)
        return head + b''.join(mp_encode(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b'\xde' + struct.pack('>H', n) if n < 65536 else b'\xdf' + struct.pack('>I', n)
        return head + b''.join(mp_encode(k) + mp_encode(x) for k, x in v.items())
    raise TypeError(type(v))


def from_json(v):
    """Vector JSON value -> Python value ({"$bin": hex} -> bytes)."""
    if isinstance(v, dict):
        if list(v.keys()) == ['$bin']:
            return h2b(v['$bin'])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


# ------------------------------------------------------------------ checks

checks = 0


def eq(what, got, want):
    global checks
    checks += 1
    if got != want:
        raise AssertionError(f'{what}: got {got.hex() if isinstance(got, bytes) else got}, want {want.hex() if isinstance(want, bytes) else want}')


def ticket_box(k_res, lifetime_s, tk, want, what):
    """nt = secretbox(uint32be(lifetime_s) || tk, 24 zero bytes, k_res) (PROTOCOL.md §3.6); checks it opens back."""
    plain = struct.pack('>I', lifetime_s) + tk
    eq(what + ' plaintext', plain.hex(), want['plaintext'])
    box = secretbox(plain, bytes(24), k_res)
    eq(what, box.hex(), want['box'])
    opened = secretbox_open(box, bytes(24), k_res)
    eq(what + ' opens to (lifetime_s, tk)', (struct.unpack('>I', opened[:4])[0], opened[4:]), (lifetime_s, tk))
    return box


def check_resumption(r, S_pub, rms, tk, lifetime_s):
    """resumption.json from handshake.json's rms and ticket (PROTOCOL.md §3.6)."""
    eq('resumption S_pub', r['serverStaticPublicKey'], S_pub.hex())
    eq('resumption rms', r['rms'], rms.hex())
    eq('resumption tk', r['tk'], tk.hex())
    eq('resumption lifetime_s', r['lifetime_s'], lifetime_s)
    cr, ns, age = h2b(r['cr']), h2b(r['ns']), r['age']
    # client
    h_input = b'tessera-resume-v1' + S_pub + cr + r['age'].to_bytes(4, 'big') + tk
    eq('resumption h input', h_input.hex(), r['h_input'])
    h = hashlib.sha256(h_input).digest()
    k_early = hkdf_sha256(rms, h, b'tessera-resume-v1 early', 32)
    early = mp_encode(from_json(r['early']['message']))
    eq('early request msgpack', early.hex(), r['early']['msgpack'])
    x = secretbox(early, bytes(24), k_early)
    for name, v in (('h', h), ('k_early', k_early), ('x', x)):
        eq('resumption ' + name, v.hex(), r[name])
    hs_resume = {'v': 1, 't': 3, 'tk': tk, 'cr': cr, 'age': age, 'x': x}
    eq('HS_RESUME message', hs_resume, from_json(r['hsResume']['message']))
    eq('HS_RESUME msgpack', mp_encode(hs_resume).hex(), r['hsResume']['msgpack'])
    eq('HS_RESUME frame', frame(mp_encode(hs_resume)).hex(), r['hsResume']['frame'])
    # server
    eq('x opens to the early request', secretbox_open(x, bytes(24), k_early), early)
    # x as sent is bound into h2 (a stripped or added x fails the key confirmation)
    xh_input = b'tessera-resume-v1 x' + b'\x01' + x
    eq('resumption xh input', xh_input.hex(), r['xh_input'])
    xh = hashlib.sha256(xh_input).digest()
    eq('resumption xh', xh.hex(), r['xh'])
    h2 = hashlib.sha256(h + xh + ns).digest()
    okm = hkdf_sha256(rms, h2, b'tessera-resume-v1 keys', 160)
    k_c2s, k_s2c, k_confirm, k_res, rms_next = (okm[i:i + 32] for i in range(0, 160, 32))
    for name, v in (('h2', h2), ('okm', okm), ('k_c2s', k_c2s), ('k_s2c', k_s2c), ('k_confirm', k_confirm), ('k_res', k_res),
                    ('rms_next', rms_next)):
        eq('resumption ' + name, v.hex(), r[name])
    confirm = secretbox(h2, bytes(24), k_confirm)
    eq('resumption confirm', confirm.hex(), r['confirm'])
    eq('resumption confirm opens to h2', secretbox_open(confirm, bytes(24), k_confirm), h2)
    nt = ticket_box(k_res, r['nt']['lifetime_s'], h2b(r['nt']['tk']), r['nt'], 'HS_RESUMED nt')
    hs_resumed = {'v': 1, 't': 4, 'n': ns, 'confirm': confirm, 'nt': nt}
    eq('HS_RESUMED msgpack', mp_encode(hs_resumed).hex(), r['hsResumed']['msgpack'])
    eq('HS_RESUMED frame', frame(mp_encode(hs_resumed)).hex(), r['hsResumed']['frame'])
    # the same resumption without early data
    w = r['withoutEarlyData']
    xh_input0 = b'tessera-resume-v1 x' + b'\x00'
    eq('resumption without x: xh input', xh_input0.hex(), w['xh_input'])
    xh0 = hashlib.sha256(xh_input0).digest()
    h2_0 = hashlib.sha256(h + xh0 + ns).digest()
    okm0 = hkdf_sha256(rms, h2_0, b'tessera-resume-v1 keys', 160)
    for name, v in (('xh', xh0), ('h2', h2_0), ('okm', okm0), ('confirm', secretbox(h2_0, bytes(24), okm0[64:96]))):
        eq('resumption without x: ' + name, v.hex(), w[name])
    # then sealed frames, counters from 0 in each direction (x does not count)
    eq('resumed frames', [(f['direction'], f['counter']) for f in r['frames']], [('s2c', 0), ('c2s', 0)])
    for f in r['frames']:
        key = k_c2s if f['direction'] == 'c2s' else k_s2c
        nonce = struct.pack('>Q', f['counter']) + bytes(16)
        body = mp_encode(from_json(f['message']))
        eq(f"resumed frame {f['direction']} {f['counter']} msgpack", body.hex(), f['msgpack'])
        eq(f"resumed frame {f['direction']} {f['counter']}", frame(secretbox(body, nonce, key)).hex(), f['frame'])


def main():
    for f in load('framing.json')['frames']:
        eq(f['name'], frame(h2b(f['body'])).hex(), f['frame'])

    codec = load('codec.json')
    for x in codec['values'] + codec['messages']:
        eq(x['name'], mp_encode(from_json(x['value'])).hex(), x['msgpack'])

    for x in load('usage-keys.json')['vectors']:
        eq(x['name'], usage_key(h2b(x['key']), x['usage']).hex(), x['subkey'])

    for x in load('seal.json')['vectors']:
        key, usage = h2b(x['key']), x['usage']
        eq(x['name'], seal(key, usage, h2b(x['plaintext']), h2b(x['nonce'])).hex(), x['sealed'])
        eq(x['name'] + ' open', open_sealed(key, usage, h2b(x['sealed'])).hex(), x['plaintext'])
        eq(x['name'] + ' wrong usage', open_sealed(key, usage + 1, h2b(x['sealed'])), None)

    for x in load('password-keys.json')['vectors']:
        pw = unicodedata.normalize('NFC', x['password']).encode('utf-8')
        salt = (x['realm'] + x['principal']).encode('utf-8')
        eq(x['name'] + ' salt', salt.hex(), x['saltUtf8'])
        k = x['kdf']
        key = hashlib.scrypt(pw, salt=salt, n=k['N'], r=k['r'], p=k['p'], dklen=32, maxmem=256 * 1024 * 1024)
        eq(x['name'], key.hex(), x['key'])

    xv = load('x25519.json')
    for x in xv['publicKeys']:
        eq(x['name'], x25519_base(h2b(x['secretKey'])).hex(), x['publicKey'])
    for x in xv['shared']:
        eq(x['name'], x25519(h2b(x['secretKey']), h2b(x['publicKey'])).hex(), x['shared'])
    for x in xv['lowOrder']:
        try:
            x25519(h2b(xv['publicKeys'][0]['secretKey']), h2b(x['publicKey']))
            raise AssertionError(f"{x['name']}: accepted")
        except ValueError:
            pass

    hs = load('handshake.json')
    S, Ec, Es = (h2b(hs[k]['secretKey']) for k in ('serverStatic', 'clientEphemeral', 'serverEphemeral'))
    S_pub, Ec_pub, Es_pub = x25519_base(S), x25519_base(Ec), x25519_base(Es)
    eq('S_pub', S_pub.hex(), hs['serverStatic']['publicKey'])
    hs_init = {'v': 1, 't': 1, 'e': Ec_pub}
    eq('HS_INIT frame', frame(mp_encode(hs_init)).hex(), hs['hsInit']['frame'])
    h = hashlib.sha256(b'tessera-nk-v1' + S_pub + Ec_pub + Es_pub).digest()
    es, ee = x25519(Ec, S_pub), x25519(Ec, Es_pub)
    eq('es from the server side', x25519(S, Ec_pub), es)
    eq('ee from the server side', x25519(Es, Ec_pub), ee)
    okm = hkdf_sha256(es + ee, h, b'tessera-nk-v1 keys', 160)
    k_c2s, k_s2c, k_confirm, k_res, rms = (okm[i:i + 32] for i in range(0, 160, 32))
    eq('okm prefix with L = 96', hkdf_sha256(es + ee, h, b'tessera-nk-v1 keys', 96), okm[:96])
    for name, v in (('h', h), ('es', es), ('ee', ee), ('okm', okm), ('k_c2s', k_c2s), ('k_s2c', k_s2c), ('k_confirm', k_confirm),
                    ('k_res', k_res), ('rms', rms)):
        eq(name, v.hex(), hs[name])
    confirm = secretbox(h, bytes(24), k_confirm)
    eq('confirm', confirm.hex(), hs['confirm'])
    eq('confirm opens to h', secretbox_open(confirm, bytes(24), k_confirm), h)
    eq('HS_RESP frame', frame(mp_encode({'v': 1, 't': 2, 'e': Es_pub, 'confirm': confirm})).hex(), hs['hsResp']['frame'])
    tk = h2b(hs['nt']['tk'])
    nt = ticket_box(k_res, hs['nt']['lifetime_s'], tk, hs['nt'], 'HS_RESP nt')
    eq('HS_RESP with nt frame', frame(mp_encode({'v': 1, 't': 2, 'e': Es_pub, 'confirm': confirm, 'nt': nt})).hex(),
       hs['hsRespWithNt']['frame'])
    for f in hs['frames']:
        key = k_c2s if f['direction'] == 'c2s' else k_s2c
        nonce = struct.pack('>Q', f['counter']) + bytes(16)
        body = mp_encode(from_json(f['message']))
        eq(f"frame {f['direction']} {f['counter']} msgpack", body.hex(), f['msgpack'])
        eq(f"frame {f['direction']} {f['counter']}", frame(secretbox(body, nonce, key)).hex(), f['frame'])

    check_resumption(load('resumption.json'), S_pub, rms, tk, hs['nt']['lifetime_s'])

    ts = load('time-signature.json')
    signed = b'tessera-time-v1' + h2b(ts['nonce']) + struct.pack('>QQI', ts['recv'], ts['xmit'], ts['radius'])
    eq('TIME_REP signed input', signed.hex(), ts['input'])
    eq('TIME_REP msgpack', mp_encode(from_json(ts['timeRep']['message'])).hex(), ts['timeRep']['msgpack'])

    ex = load('exchanges.json')
    keys = {k: h2b(v) for k, v in ex['keys'].items()}
    eq('keys.client', hashlib.scrypt(b'password', salt=b'EXAMPLE.COMalice', n=1024, r=8, p=1, dklen=32), keys['client'])
    for s in ex['steps']:
        if s['kind'] == 'sealed':
            m = mp_encode(from_json(s['inner']))
            eq(s['name'] + ' msgpack', m.hex(), s['msgpack'])
            eq(s['name'], seal(keys[s['key']], s['usage'], m, h2b(s['nonce'])).hex(), s['sealed'])
        else:
            eq(s['name'], mp_encode(from_json(s['message'])).hex(), s['msgpack'])

    print(f'{checks} passed, 0 failed')


if __name__ == '__main__':
    try:
        main()
    except AssertionError as e:
        print(f'FAILED: {e}', file=sys.stderr)
        print(f'{checks} passed, 1 failed')
        sys.exit(1)
