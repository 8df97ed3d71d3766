// A child node answering as the original's receiving library does.
// Usage: node child.js <mediator> <jwt secret> <aes passphrase> <cluster> <node>
// Prints one JSON line once registered, then serves until stdin closes.
'use strict';
const http = require('http');
const { encrypt, decrypt, token } = require('./original');
const [mediator, secret, passphrase, cluster, node] = process.argv.slice(2);

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const send = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (!req.headers['x-mediator']) {
      return send(404, { error: 'not sent by the mediator' });
    }
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      return send(409, { error: 'body is not JSON' });
    }
    if (typeof body.payload !== 'string') {
      return send(409, { error: 'payload is missing' });
    }
    let data;
    try {
      data = JSON.parse(decrypt(passphrase, body.payload));
    } catch (e) {
      return send(409, { error: 'cannot decrypt: ' + e.message });
    }
    const reply = {
      echoed: data,
      fromCluster: body.fromCluster,
      fromNode: body.fromNode,
      url: req.url,
      method: req.method,
      by: 'node.js child',
    };
    send(200, { payload: encrypt(passphrase, JSON.stringify(reply)) });
  });
});

server.listen(0, '127.0.0.1', async () => {
  const port = server.address().port;
  try {
    const response = await fetch(mediator + '/register', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-jwt': token(secret) },
      body: JSON.stringify({ cluster, node, domain: 'http://127.0.0.1', port }),
    });
    const answer = await response.json();
    console.log(JSON.stringify({ status: response.status, answer, port }));
  } catch (e) {
    console.log(JSON.stringify({ error: String(e) }));
    process.exit(1);
  }
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
// Never outlive a test that forgot us.
setTimeout(() => process.exit(2), 60000).unref();
