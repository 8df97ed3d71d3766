// Checks original.js against the committed known answers (computed with
// OpenSSL): every vector decrypts to its plaintext, and what original.js
// encrypts decrypts back. Usage: node vectors.js <legacy_vectors.json>
'use strict';
const fs = require('fs');
const { encrypt, decrypt } = require('./original');
const vectors = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let checked = 0;
for (const v of vectors) {
  if (decrypt(v.passphrase, v.expected) !== v.plaintext) {
    throw new Error('vector for ' + JSON.stringify(v.passphrase) + ' does not decrypt');
  }
  if (decrypt(v.passphrase, encrypt(v.passphrase, v.plaintext)) !== v.plaintext) {
    throw new Error('round trip failed for ' + JSON.stringify(v.passphrase));
  }
  checked += 1;
}
console.log(JSON.stringify({ checked }));
