// Sends as the original's sending library does.
// Usage: node sender.js <mediator> <jwt secret> <aes passphrase> <cluster> <node> <path> <json> [raw-payload]
// Prints one JSON line: {status, reply} (reply decrypted and parsed on 200).
'use strict';
const { encrypt, decrypt, token } = require('./original');
const [mediator, secret, passphrase, cluster, node, path, json, raw] = process.argv.slice(2);

(async () => {
  const url = mediator + '/one/' + cluster + '/' + node + '/' + path.replace(/^\//, '');
  const payload = raw !== undefined ? raw : encrypt(passphrase, JSON.stringify(JSON.parse(json)));
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-jwt': token(secret) },
    body: JSON.stringify({ fromCluster: 'jsland', fromNode: 'sender', payload }),
  });
  const text = await response.text();
  let reply;
  if (response.status === 200) {
    reply = JSON.parse(decrypt(passphrase, JSON.parse(text).payload));
  } else {
    reply = JSON.parse(text);
  }
  console.log(JSON.stringify({ status: response.status, node: response.headers.get('x-mediator-node'), reply }));
})().catch((e) => {
  console.log(JSON.stringify({ error: String(e), cause: String(e.cause) }));
  process.exit(1);
});
setTimeout(() => process.exit(2), 30000).unref();
