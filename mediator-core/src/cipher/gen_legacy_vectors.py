#!/usr/bin/env python3
"""Writes legacy_vectors.json: known answers for the original's AES-256-CBC cipher.

The expected texts come from the OpenSSL command line, not from our Rust code:

    key_hex=$(printf '%s' "$passphrase" | openssl dgst -md5 -r | cut -c1-32 | tr -d '\n' | od -An -tx1 | tr -d ' \n')
    printf '%s' "$plaintext" | openssl enc -aes-256-cbc -K "$key_hex" -iv "$iv" | od -An -tx1 | tr -d ' \n'

that is: key = the 32 ASCII bytes of the lowercase hex MD5 digest of the
passphrase, PKCS#7 padding (openssl's default), text = hex(iv) ":" hex(ciphertext).
Each answer is cross-checked with Python's `cryptography` package before it is
written. Run from this folder: `python3 gen_legacy_vectors.py`.
"""

import hashlib
import json
import subprocess

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

LONG_TEXT = ("The quick brown fox jumps over the lazy dog. " * 30)[:1000]

# (passphrase, iv, plaintext); the IVs were drawn once with `openssl rand -hex 16`.
CASES = [
    ("secret", "f90bec9184852304febff8f1d013c8d4", "{}"),
    (
        "correct horse battery staple",
        "d30730fe8cd9113268b1cffdc6cc7a69",
        '{"fromCluster":"bench","fromNode":"echo","payload":{"n":1,"text":"hello"}}',
    ),
    ("p@ss:word with spaces", "d02f40e13ce926c1a48f75bb63a9bb7d", LONG_TEXT),
    (
        "пароль-密码-🔑",
        "501fbcfa735012ff3ac7ab4702a80fdf",
        '{"msg":"héllo wörld — 你好 🌍"}',
    ),
    ("", "cf096f8c4bd2b7dd3eb95046316ce0e4", "0123456789abcdef"),
    ("secret", "b97ad8c7515204f6ba8fa92d9c78384a", ""),
]


def openssl_key(passphrase: str) -> bytes:
    out = subprocess.run(
        ["openssl", "dgst", "-md5", "-r"],
        input=passphrase.encode(),
        capture_output=True,
        check=True,
    ).stdout
    digest_hex = out.split()[0]
    assert len(digest_hex) == 32
    return digest_hex  # the 32 ASCII bytes are the key


def openssl_encrypt(key: bytes, iv: str, plaintext: bytes) -> bytes:
    return subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv],
        input=plaintext,
        capture_output=True,
        check=True,
    ).stdout


def python_encrypt(passphrase: str, iv: str, plaintext: bytes) -> bytes:
    key = hashlib.md5(passphrase.encode()).hexdigest().encode("ascii")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(bytes.fromhex(iv))).encryptor()
    return enc.update(padded) + enc.finalize()


def main() -> None:
    vectors = []
    for passphrase, iv, text in CASES:
        plaintext = text.encode()
        key = openssl_key(passphrase)
        ciphertext = openssl_encrypt(key, iv, plaintext)
        assert ciphertext == python_encrypt(passphrase, iv, plaintext), passphrase
        vectors.append(
            {
                "passphrase": passphrase,
                "key_ascii": key.decode("ascii"),
                "iv": iv,
                "plaintext": text,
                "expected": iv + ":" + ciphertext.hex(),
            }
        )
    with open("legacy_vectors.json", "w", encoding="utf-8") as f:
        json.dump(vectors, f, ensure_ascii=False, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
