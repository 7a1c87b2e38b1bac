'use strict';
// What the grpc-js server and load client share: the Echo service from proto/echo.proto and argument parsing.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', '..', 'proto', 'echo.proto');
const MAX_MESSAGE = 64 << 20;

/** The generated client constructor of switchboard.echo.v1.Echo; its `.service` is the service definition. */
function loadEcho() {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
  return grpc.loadPackageDefinition(definition).switchboard.echo.v1.Echo;
}

/** A Go-style duration (`1500ms`, `1s`, `2m`) in milliseconds. */
function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!m) {
    fail(`${JSON.stringify(text)} is not a duration such as 500ms, 1s or 2m`);
  }
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2]]);
}

/** `KEY=VALUE` as a [key, value] pair; integers stay integers, as grpc-js channel options want them. */
function parseOption(text) {
  const at = text.indexOf('=');
  if (at < 1) {
    fail(`${JSON.stringify(text)} is not KEY=VALUE`);
  }
  const value = text.slice(at + 1);
  return [text.slice(0, at), /^-?\d+$/.test(value) ? Number(value) : value];
}

function fail(message) {
  process.stderr.write(`${path.basename(process.argv[1])}: ${message}\n`);
  process.exit(2);
}

module.exports = { grpc, loadEcho, parseDuration, parseOption, fail, MAX_MESSAGE };
