// The original's wire rules, written independently of the Rust code with
// node's own crypto module, as the original's child libraries use it:
// AES-256-CBC, key = the 32 ASCII bytes of the hex MD5 of the passphrase,
// text = hex(iv) ":" hex(ciphertext); HS256 tokens with payload {iat, exp}.
'use strict';
const crypto = require('crypto');

function keyOf(passphrase) {
  return Buffer.from(crypto.createHash('md5').update(passphrase).digest('hex'), 'ascii');
}

function encrypt(passphrase, text) {
  const iv = crypto.randomBytes(16);
  const cipher = crypto.createCipheriv('aes-256-cbc', keyOf(passphrase), iv);
  const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return iv.toString('hex') + ':' + body.toString('hex');
}

function decrypt(passphrase, text) {
  const parts = text.split(':');
  const iv = Buffer.from(parts.shift(), 'hex');
  const decipher = crypto.createDecipheriv('aes-256-cbc', keyOf(passphrase), iv);
  const body = Buffer.from(parts.join(':'), 'hex');
  return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
}

function b64url(buffer) {
  return Buffer.from(buffer).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

// The original's token: {} plus iat and exp (9 h), signed with the secret.
function token(secret) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ iat: now, exp: now + 9 * 3600 }));
  const signature = b64url(crypto.createHmac('sha256', secret).update(head + '.' + payload).digest());
  return head + '.' + payload + '.' + signature;
}

module.exports = { encrypt, decrypt, token };
