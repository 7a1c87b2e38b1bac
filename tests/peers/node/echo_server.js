'use strict';
// A @grpc/grpc-js server for switchboard.echo.v1.Echo, a real peer for switchboard's tests. It answers like the
// tonic test backend (tests/support/mod.rs) and the grpc-go peer (tests/peers/go):
//   reply headers carry `x-backend: NAME` and every `x-echo-*` request entry; trailers carry `x-backend`;
//   `x-sleep-ms: N` sleeps first (cut short by a cancel); `x-fail: CODE` fails with "failed by NAME as asked"
//   (trailers `x-backend`, `x-detail-bin`); `x-no-read: 1` on ClientStream/BidiStream sends the headers, never
//   reads, and waits for the cancel.
//
// Flags: --listen ADDR (port 0: any), --name NAME, --max-connection-age DUR, --max-connection-age-grace DUR,
// --max-concurrent-streams N, --option KEY=VALUE (any grpc-js server option, repeatable), --tls-cert FILE and
// --tls-key FILE (serve TLS), --tls-client-ca FILE (and require client certificates from that CA).
// stdout: `listening HOST:PORT`. SIGTERM: tryShutdown (open calls finish), then exit 0.

const { once } = require('node:events');
const { parseArgs } = require('node:util');
const { grpc, loadEcho, parseDuration, parseOption, fail, MAX_MESSAGE } = require('./common');

const { values: args } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:0' },
    name: { type: 'string', default: 'grpc-js' },
    'max-connection-age': { type: 'string' },
    'max-connection-age-grace': { type: 'string' },
    'max-concurrent-streams': { type: 'string' },
    option: { type: 'string', multiple: true, default: [] },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-client-ca': { type: 'string' },
  },
});
const name = args.name;

function first(md, key) {
  return md.get(key)[0];
}

/** Response headers: `x-backend` and the echoed `x-echo-*` entries. */
function headers(md) {
  const out = new grpc.Metadata();
  out.set('x-backend', name);
  for (const [key, values] of Object.entries(md.toJSON())) {
    if (key.startsWith('x-echo-')) {
      values.forEach((v) => out.add(key, v));
    }
  }
  return out;
}

function trailers() {
  const out = new grpc.Metadata();
  out.set('x-backend', name);
  return out;
}

/** Resolves on `event` or on the call's cancellation, whichever comes first. */
function until(call, event) {
  if (call.cancelled) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      call.off(event, done);
      call.off('cancelled', done);
      resolve();
    };
    call.once(event, done);
    call.once('cancelled', done);
  });
}

/** Applies `x-sleep-ms` and `x-fail`; returns the status to fail with, or null. */
async function controls(call) {
  const ms = Number(first(call.metadata, 'x-sleep-ms'));
  if (ms > 0 && !call.cancelled) {
    let timer;
    await Promise.race([new Promise((r) => (timer = setTimeout(r, ms))), until(call, 'cancelled')]);
    clearTimeout(timer);
  }
  const code = first(call.metadata, 'x-fail');
  if (code === undefined) {
    return null;
  }
  const metadata = trailers();
  metadata.set('x-detail-bin', Buffer.from([0, 1, 2, 255]));
  return { code: Number(code), details: `failed by ${name} as asked`, metadata };
}

/** `x-no-read: 1`: headers out, then nothing until the call is cancelled. */
async function stalled(call) {
  if (first(call.metadata, 'x-no-read') !== '1') {
    return false;
  }
  call.sendMetadata(headers(call.metadata));
  await until(call, 'cancelled');
  return true;
}

const handlers = {
  async Unary(call, callback) {
    const failure = await controls(call);
    if (failure) {
      return callback(failure);
    }
    call.sendMetadata(headers(call.metadata));
    callback(null, { payload: call.request.payload, backend: name, received: 1 }, trailers());
  },

  async ServerStream(call) {
    const failure = await controls(call);
    if (failure) {
      return call.emit('error', failure);
    }
    call.sendMetadata(headers(call.metadata));
    for (let i = 0; i < call.request.count && !call.cancelled; i++) {
      if (!call.write({ payload: call.request.payload, backend: name, received: i })) {
        await until(call, 'drain');
      }
    }
    call.end(trailers());
  },

  async ClientStream(call, callback) {
    const failure = await controls(call);
    if (failure) {
      return callback(failure);
    }
    if (await stalled(call)) {
      return;
    }
    let received = 0;
    let bytes = 0;
    let last = Buffer.alloc(0);
    call.on('data', (m) => {
      received += 1;
      bytes += m.payload.length;
      last = m.payload;
    });
    await once(call, 'end');
    call.sendMetadata(headers(call.metadata));
    callback(null, { payload: last.subarray(0, 64), backend: `${name}:${bytes}`, received }, trailers());
  },

  async BidiStream(call) {
    const failure = await controls(call);
    if (failure) {
      return call.emit('error', failure);
    }
    if (await stalled(call)) {
      return;
    }
    call.sendMetadata(headers(call.metadata));
    let i = 0;
    call.on('data', (m) => call.write({ payload: m.payload, backend: name, received: i++ }));
    call.on('end', () => call.end(trailers()));
  },
};

const options = {
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
};
if (args['max-connection-age'] !== undefined) {
  options['grpc.max_connection_age_ms'] = parseDuration(args['max-connection-age']);
}
if (args['max-connection-age-grace'] !== undefined) {
  options['grpc.max_connection_age_grace_ms'] = parseDuration(args['max-connection-age-grace']);
}
if (args['max-concurrent-streams'] !== undefined) {
  options['grpc.max_concurrent_streams'] = Number(args['max-concurrent-streams']);
}
for (const [key, value] of args.option.map(parseOption)) {
  options[key] = value;
}

const server = new grpc.Server(options);
server.addService(loadEcho().service, handlers);
function credentials() {
  if (!args['tls-cert']) {
    return grpc.ServerCredentials.createInsecure();
  }
  const fs = require('node:fs');
  const pair = { cert_chain: fs.readFileSync(args['tls-cert']), private_key: fs.readFileSync(args['tls-key']) };
  const clientCa = args['tls-client-ca'] ? fs.readFileSync(args['tls-client-ca']) : null;
  return grpc.ServerCredentials.createSsl(clientCa, [pair], clientCa !== null);
}

server.bindAsync(args.listen, credentials(), (err, port) => {
  if (err) {
    fail(`cannot listen on ${args.listen}: ${err.message}`);
  }
  const host = args.listen.slice(0, args.listen.lastIndexOf(':'));
  process.stdout.write(`listening ${host}:${port}\n`);
});

process.on('SIGTERM', () => {
  process.stderr.write('SIGTERM: tryShutdown\n');
  server.tryShutdown((err) => {
    if (err) {
      fail(`shutdown: ${err.message}`);
    }
    process.stderr.write('shutdown done\n');
    process.exit(0);
  });
});
