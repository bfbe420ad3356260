// A stream's events read from Node.js as another team would read them: the NATS JetStream client
// (@nats-io/jetstream) with an ordered consumer, which leaves nothing on the server, and each body
// decoded as the a4co.events.v1.EventEnvelope it is, its payload by the type its Any names, from
// the .proto files as they are. One JSON line per event, oldest first, up to the last one stored
// when it started.
//
//   node clients/node/events.mjs [--addresses FILE] [--stream ORDERS] [--subject SUBJECT]
//
// NATS's address comes from `make run`'s addresses.json, in $A4CO_DATA_DIR or .data (or A4CO_NATS_URL, which may name a
// cluster's servers separated by commas); A4CO_PREFIX is the deployment's prefix, if it has one;
// TLS follows the A4CO_TLS_* variables, and who it is to NATS A4CO_NATS_CREDS_FILE,
// A4CO_NATS_NKEY_FILE or a user and password in the URL, as for the services.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, credsAuthenticator, nkeyAuthenticator } from "@nats-io/transport-node";

import { DEFAULT_ADDRESSES, eventTypes, rfc3339, tlsFiles } from "./a4co.mjs";

const { values: args } = parseArgs({
  options: {
    addresses: { type: "string", default: DEFAULT_ADDRESSES },
    stream: { type: "string", default: "ORDERS" },
    subject: { type: "string" },
  },
});

function natsUrl() {
  if (process.env.A4CO_NATS_URL) return process.env.A4CO_NATS_URL;
  return JSON.parse(readFileSync(args.addresses, "utf8")).servers.A4CO_NATS_URL;
}

const prefix = process.env.A4CO_PREFIX ?? "";
const onServer = (name, separator) => (prefix ? `${prefix}${separator}${name}` : name);

const types = eventTypes();
const ENVELOPE = types.lookupType("a4co.events.v1.EventEnvelope");
// Protobuf's JSON mapping, as far as protobufjs goes: 64-bit integers and enums as strings,
// Timestamps in RFC 3339 (a4co.mjs), fields at their default left out; names as in the .proto.
const AS_JSON = { longs: String, enums: String, defaults: false, json: true };

function decode(message) {
  const line = { seq: message.seq, subject: message.subject, ce_type: message.headers?.get("ce-type") };
  if (message.headers?.has("a4co-dlq-reason")) {
    // A dead letter: the original headers and body, and why a consumer gave it up.
    line.dead_letter = Object.fromEntries(
      ["reason", "error", "consumer", "deliveries"].map((name) => [name, message.headers.get(`a4co-dlq-${name}`)]),
    );
  }
  try {
    const envelope = ENVELOPE.decode(message.data);
    const name = envelope.payload.type_url.slice(envelope.payload.type_url.lastIndexOf("/") + 1);
    const type = types.lookupType(name);
    const occurred = envelope.occurred_at;
    return Object.assign(line, {
      event_type: envelope.event_type,
      event_version: envelope.event_version,
      event_id: envelope.event_id,
      aggregate_id: envelope.aggregate_id,
      occurred_at: occurred && rfc3339(occurred.seconds, occurred.nanos),
      correlation_id: envelope.metadata?.correlation_id,
      payload_type: name,
      payload: type.toObject(type.decode(envelope.payload.value), AS_JSON),
    });
  } catch (error) {
    // Not an event of these contracts (a dead letter's body may be anything): said, not fatal.
    return Object.assign(line, { undecodable: error.message, body_bytes: message.data.length });
  }
}

/** A server of a NATS URL, parsed; one without a scheme is nats://, as NATS's clients read it. */
const parseServer = (server) => new URL(server.includes("://") ? server : `nats://${server}`);

/** The servers of a NATS URL: a cluster's separated by commas, as the services take them (decision 64). */
const serverList = (url) => url.split(",").map((server) => server.trim()).filter(Boolean);

/** A NATS URL without its passwords and tokens, as the services say it (decision 67). */
function redact(url) {
  return serverList(url)
    .map((server) => {
      const parsed = parseServer(server);
      if (!parsed.username && !parsed.password) return server;
      return `${parsed.protocol}//${parsed.password ? `${parsed.username}:***` : "***"}@${parsed.host}`;
    })
    .join(",");
}

/** Who to be on NATS, as the services (decision 67): a credentials file (operator mode), an nkey
 * seed, or the user and password (or token) of the URL, which nats.js does not take from it. */
function natsAuth(servers) {
  const env = process.env;
  if (env.A4CO_NATS_CREDS_FILE) return { authenticator: credsAuthenticator(readFileSync(env.A4CO_NATS_CREDS_FILE)) };
  if (env.A4CO_NATS_NKEY_FILE) {
    const seed = readFileSync(env.A4CO_NATS_NKEY_FILE, "utf8").trim();
    return { authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)) };
  }
  for (const server of servers) {
    const { username, password } = parseServer(server);
    if (password) return { user: decodeURIComponent(username), pass: decodeURIComponent(password) };
    if (username) return { token: decodeURIComponent(username) };
  }
  return {};
}

/** A connection over TLS with the deployment's files when the server offers TLS, as the services
 * connect (decision 62); in plaintext to a server without it. */
async function connectNats(url) {
  // nats.js is given the servers without the user and password, which go as options.
  const given = serverList(url);
  const servers = given.map((server) => {
    const parsed = parseServer(server);
    return parsed.username || parsed.password ? `${parsed.protocol}//${parsed.host}` : server;
  });
  const options = { servers, name: "a4co-node-events", ...natsAuth(given) };
  // nats.js reads the files itself: the same { caFile, certFile, keyFile } names.
  const tls = tlsFiles();
  if (tls) {
    try {
      return await connect({ ...options, tls });
    } catch (error) {
      if (!String(error.message).includes("does not support 'tls'")) throw error;
    }
  }
  return connect(options);
}

let url; // NATS's address, once known, for the error line

// A reader that stops reading (`| head -n 3`) ends this as it ends any Unix filter: quietly, with
// status 0, instead of an unhandled EPIPE and its stack.
process.stdout.on("error", (error) => {
  if (error.code !== "EPIPE") throw error;
  process.exit(0);
});

async function main() {
  url = natsUrl();
  const nc = await connectNats(url);
  try {
    const stream = onServer(args.stream, "_");
    const filter = args.subject ? onServer(args.subject, ".") : undefined;
    // With a filter, the stream's counts of the subjects it matches: a consumer would wait for the
    // first of none.
    const { state } = await (await jetstreamManager(nc)).streams.info(stream, filter && { subjects_filter: filter });
    const matching = filter ? Object.values(state.subjects ?? {}).reduce((sum, n) => sum + n, 0) : state.messages;
    if (matching === 0) return;
    const consumer = await jetstream(nc).consumers.get(stream, filter ? { filter_subjects: filter } : {});
    for await (const message of await consumer.consume()) {
      process.stdout.write(`${JSON.stringify(decode(message))}\n`);
      if (message.seq >= state.last_seq || message.info.pending === 0) break;
    }
  } finally {
    await nc.close();
  }
}

main().catch((error) => {
  const what = error.name === "StreamNotFoundError" ? `no stream ${args.stream}` : error.message;
  process.stderr.write(`events: ${what}${url ? ` (NATS at ${redact(url)})` : ""}\n`);
  process.exitCode = 1;
});
