'use strict';
// A @grpc/grpc-js load client for switchboard.echo.v1.Echo, with the arguments and output of
// tests/interop/load_client.py:
//   --target TARGET [--lb round_robin|pick_first] [--concurrency N] (--calls N | --duration S)
//   [--method unary|server|client|bidi] [--count N] [--payload-size B] [--timeout S] [--ready-timeout S]
//   [--metadata KEY=VALUE ...] [--option KEY=VALUE ...] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
// It waits until the channel is ready, keeps N calls in flight, counts failed calls and goes on.
// stdout: {"calls", "codes": {STATUS_NAME: n}, "errors": [first few "STATUS: details"], "backends": {x-backend: n},
// "elapsed_ms"}. Exits 0 when the load ran, 2 when the channel did not become ready.

const { parseArgs } = require('node:util');
const { grpc, loadEcho, parseOption, fail, MAX_MESSAGE } = require('./common');

const KEPT_ERRORS = 5;
const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

const { values: args } = parseArgs({
  options: {
    target: { type: 'string' },
    lb: { type: 'string', default: 'pick_first' },
    concurrency: { type: 'string', default: '1' },
    calls: { type: 'string' },
    duration: { type: 'string' },
    method: { type: 'string', default: 'unary' },
    count: { type: 'string', default: '3' },
    'payload-size': { type: 'string', default: '16' },
    timeout: { type: 'string', default: '10' },
    'ready-timeout': { type: 'string', default: '10' },
    metadata: { type: 'string', multiple: true, default: [] },
    option: { type: 'string', multiple: true, default: [] },
    'tls-ca': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
  },
});
if (!args.target || (args.calls === undefined) === (args.duration === undefined)) {
  fail('needs --target and exactly one of --calls and --duration');
}
if (!['pick_first', 'round_robin'].includes(args.lb) || !['unary', 'server', 'client', 'bidi'].includes(args.method)) {
  fail(`unknown --lb ${args.lb} or --method ${args.method}`);
}

const options = {
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
  'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ [args.lb]: {} }] }),
};
for (const [key, value] of args.option.map(parseOption)) {
  options[key] = value;
}
/** TLS (with a client certificate when given) with --tls-ca, else cleartext. */
function credentials() {
  if (!args['tls-ca']) {
    return grpc.credentials.createInsecure();
  }
  const fs = require('node:fs');
  const read = (flag) => (args[flag] ? fs.readFileSync(args[flag]) : null);
  return grpc.credentials.createSsl(read('tls-ca'), read('tls-key'), read('tls-cert'));
}

const metadata = new grpc.Metadata();
for (const [key, value] of args.metadata.map(parseOption)) {
  metadata.add(key, String(value));
}
const count = Number(args.count);
const payload = Buffer.alloc(Number(args['payload-size']), 'x');

const tally = { codes: {}, backends: {}, errors: [] };

function record(code, md, details) {
  const name = CODE_NAMES[code];
  tally.codes[name] = (tally.codes[name] || 0) + 1;
  const backend = md && md.get('x-backend')[0];
  if (backend !== undefined) {
    tally.backends[backend] = (tally.backends[backend] || 0) + 1;
  }
  if (code !== grpc.status.OK && tally.errors.length < KEPT_ERRORS) {
    tally.errors.push(`${name}: ${details}`);
  }
}

/** One call; resolves when it ended, whatever its outcome, after recording it. */
function oneCall(client) {
  return new Promise((resolve) => {
    const deadline = Date.now() + Number(args.timeout) * 1000;
    // grpc-js reports a unary call's failure to its callback and every call's end as a 'status' event.
    const ignore = () => {};
    let call;
    if (args.method === 'unary') {
      call = client.Unary({ payload }, metadata, { deadline }, ignore);
    } else if (args.method === 'server') {
      call = client.ServerStream({ payload, count }, metadata, { deadline });
    } else {
      call = args.method === 'client' ? client.ClientStream(metadata, { deadline }, ignore) : client.BidiStream(metadata, { deadline });
      for (let i = 0; i < count; i++) {
        call.write({ payload });
      }
      call.end();
    }
    if (args.method === 'server' || args.method === 'bidi') {
      call.on('data', ignore);
      call.on('error', ignore);
    }
    let headers;
    call.on('metadata', (md) => (headers = md));
    call.on('status', (status) => {
      // A call that failed before any headers still names its backend in the trailers.
      record(status.code, headers || status.metadata, status.details);
      resolve();
    });
  });
}

async function main() {
  const Echo = loadEcho();
  const client = new Echo(args.target, credentials(), options);
  const readyBy = Date.now() + Number(args['ready-timeout']) * 1000;
  await new Promise((resolve) =>
    client.waitForReady(readyBy, (err) => {
      if (err) {
        fail(`${args.target} not ready within ${args['ready-timeout']}s: ${err.message}`);
      }
      resolve();
    }),
  );
  let left = args.calls !== undefined ? Number(args.calls) : Infinity;
  const start = Date.now();
  const stopAt = args.duration !== undefined ? start + Number(args.duration) * 1000 : Infinity;
  const worker = async () => {
    while (left > 0 && Date.now() < stopAt) {
      left -= 1;
      await oneCall(client);
    }
  };
  await Promise.all(Array.from({ length: Number(args.concurrency) }, worker));
  const elapsed = Date.now() - start;
  client.close();
  const calls = Object.values(tally.codes).reduce((a, b) => a + b, 0);
  process.stdout.write(`${JSON.stringify({ calls, ...tally, elapsed_ms: elapsed })}\n`);
}

main();
