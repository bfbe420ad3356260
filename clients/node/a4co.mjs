// Calling a4co's gRPC APIs from Node.js, as another team would: @grpc/grpc-js with the .proto files
// loaded as they are (no generated code), the repository's service config on every channel, a
// deadline on every call, TLS from the same A4CO_TLS_* files as the services, and the details of
// an error (AIP-193: ErrorInfo, BadRequest, RetryInfo) decoded from its trailers.

import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

export { grpc };

const REPOSITORY = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The repository's `proto/` directory: the contracts and `service-config.json`. */
export const PROTO_DIR = join(REPOSITORY, "proto");

/** Where `make run` writes the addresses of the servers and services it started: in its data
 * directory, `A4CO_DATA_DIR` (from the working directory, as the `a4co` command reads it) or the
 * repository's `.data`. */
export const DEFAULT_ADDRESSES = join(resolve(process.env.A4CO_DATA_DIR || join(REPOSITORY, ".data")), "addresses.json");

/** Service name → "host:port", from `make run`'s addresses file (or the supervisor's own). */
export function addressesFrom(path = DEFAULT_ADDRESSES) {
  const document = JSON.parse(readFileSync(path, "utf8"));
  const services = document.services ?? document;
  return Object.fromEntries(Object.entries(services).map(([name, endpoint]) => [name, endpoint.grpc]));
}

/** A service's contract: `proto/a4co/<service>/v1/<service>_service.proto`, package a4co.<service>.v1. */
function serviceFile(protoDir, name) {
  const file = join("a4co", name, "v1", `${name}_service.proto`);
  if (!/^[a-z]+$/.test(name) || !existsSync(join(protoDir, file))) throw new Error(`unknown service ${name}`);
  return file;
}

// Messages as plain objects with the fields named as in the .proto files (proto-loader would
// otherwise rename them to camelCase and drop the snake_case ones it is given); int64 (Money's
// amount_cents, points) as strings, so no precision is lost; enums by name; fields left unset at
// their defaults; a oneof's chosen field named.
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/**
 * The deployment's TLS files, as the services read them from A4CO_TLS_*: `{ caFile, certFile,
 * keyFile }` (each present only when set), or undefined when none is set.
 */
export function tlsFiles(env = process.env) {
  const files = {};
  if (env.A4CO_TLS_CA_FILE) files.caFile = env.A4CO_TLS_CA_FILE;
  if (env.A4CO_TLS_CERT_FILE) Object.assign(files, { certFile: env.A4CO_TLS_CERT_FILE, keyFile: env.A4CO_TLS_KEY_FILE });
  return Object.keys(files).length ? files : undefined;
}

/** The credentials the services use themselves: mutual TLS when A4CO_TLS_* name files. */
export function credentialsFromEnv(env = process.env) {
  const files = tlsFiles(env);
  if (!files) return grpc.credentials.createInsecure();
  const read = (path) => (path ? readFileSync(path) : null);
  return grpc.credentials.createSsl(read(files.caFile), read(files.keyFile), read(files.certFile));
}

/**
 * A client of every service whose address is given, each on its own channel with the service
 * config (retries of the calls a second try cannot harm, on UNAVAILABLE).
 *
 * @param {Record<string, string>} addresses service name → "host:port"
 */
export function connect(addresses, { protoDir = PROTO_DIR, credentials = credentialsFromEnv() } = {}) {
  const files = Object.keys(addresses).map((name) => serviceFile(protoDir, name));
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [protoDir] });
  const loaded = grpc.loadPackageDefinition(definition);
  const options = {
    "grpc.service_config": readFileSync(join(protoDir, "service-config.json"), "utf8"),
    // The config is the repository's; no DNS TXT record is looked up for another.
    "grpc.service_config_disable_resolution": 1,
  };
  const clients = {};
  for (const [name, address] of Object.entries(addresses)) {
    // The one gRPC service its package declares (a4co.catalog.v1.CatalogService, …).
    const [Service] = Object.values(loaded.a4co[name].v1).filter((value) => value.service !== undefined);
    clients[name] = new Service(address, credentials, options);
  }
  return clients;
}

/** Metadata for a call, with the access token when there is one. */
export function metadata(accessToken) {
  const md = new grpc.Metadata();
  if (accessToken) md.set("authorization", `Bearer ${accessToken}`);
  return md;
}

/**
 * A unary call as a promise, within a deadline. A failed call rejects with grpc-js's error, to
 * which `details` adds what its google.rpc.Status holds.
 */
export function call(client, method, request, { token, deadlineMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(token), { deadline: Date.now() + deadlineMs }, (error, response) => {
      if (error) {
        error.details = statusDetails(error);
        reject(error);
      } else {
        resolve(response);
      }
    });
  });
}

// google.rpc.Status and the error details a4co sends, as in googleapis' google/rpc/*.proto.
const RPC = protobuf.parse(`
syntax = "proto3";
package google.rpc;
message Any { string type_url = 1; bytes value = 2; }
message Duration { int64 seconds = 1; int32 nanos = 2; }
message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; string reason = 3; }
  repeated FieldViolation field_violations = 1;
}
message RetryInfo { Duration retry_delay = 1; }
`, { keepCase: true }).root;
const STATUS = RPC.lookupType("google.rpc.Status");
const DETAILS = Object.fromEntries(
  ["ErrorInfo", "BadRequest", "RetryInfo"].map((name) => [`google.rpc.${name}`, RPC.lookupType(`google.rpc.${name}`)]),
);

/**
 * What a failed call's `grpc-status-details-bin` trailer holds: the reason, its domain and
 * metadata (ErrorInfo), every invalid field (BadRequest) and how long to wait (RetryInfo).
 */
export function statusDetails(error) {
  const raw = error.metadata?.get("grpc-status-details-bin")?.[0];
  if (!raw) return {};
  const status = STATUS.decode(raw);
  const found = {};
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = DETAILS[name];
    if (!type) continue;
    const detail = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
    if (name === "google.rpc.ErrorInfo") {
      Object.assign(found, { reason: detail.reason, domain: detail.domain, metadata: detail.metadata });
    } else if (name === "google.rpc.BadRequest") {
      found.fieldViolations = detail.field_violations;
    } else {
      const delay = detail.retry_delay ?? { seconds: 0, nanos: 0 };
      found.retryDelayMs = delay.seconds * 1000 + Math.round(delay.nanos / 1e6);
    }
  }
  return found;
}

/**
 * A google.protobuf.Timestamp as protobuf's JSON mapping writes it, as grpcurl and the JSON
 * printers of Go, Java and Python do: RFC 3339 in UTC with "Z", and 0, 3, 6 or 9 digits of
 * fraction ("2026-12-02T01:07:20.295Z").
 */
export function rfc3339(seconds, nanos = 0) {
  const whole = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  if (!nanos) return `${whole}Z`;
  const digits = String(nanos).padStart(9, "0");
  const fraction = digits.endsWith("000000") ? digits.slice(0, 3) : digits.endsWith("000") ? digits.slice(0, 6) : digits;
  return `${whole}.${fraction}Z`;
}

// protobufjs writes a Timestamp as {seconds, nanos} even in its JSON form (`toObject` with
// `json: true`); this wrapper gives that form the string above, and reads one back. Other
// conversions (gRPC's, through proto-loader) do not ask for `json` and keep the object.
protobuf.wrappers[".google.protobuf.Timestamp"] = {
  fromObject(object) {
    if (typeof object !== "string") return this.fromObject(object);
    const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(object);
    const millis = match ? Date.parse(`${match[1]}${match[3]}`) : Number.NaN;
    if (Number.isNaN(millis)) throw new TypeError(`not an RFC 3339 time: ${object}`);
    return this.create({ seconds: millis / 1000, nanos: Number((match[2] ?? "").padEnd(9, "0")) });
  },
  toObject(message, options) {
    return options?.json ? rfc3339(message.seconds, message.nanos) : this.toObject(message, options);
  },
};

/**
 * The event envelope and every domain event, as protobufjs types: each event's payload is an Any
 * whose type URL names its message ("type.googleapis.com/a4co.orders.events.v1.OrderCreated").
 */
export function eventTypes(protoDir = PROTO_DIR) {
  const files = readdirSync(join(protoDir, "a4co"), { recursive: true })
    .filter((file) => /(^|\/)events\/v1\/[^/]+\.proto$/.test(file))
    .map((file) => join("a4co", file));
  const root = new protobuf.Root();
  // google/protobuf/*.proto are protobufjs's own (descriptor.proto registered by proto-loader).
  root.resolvePath = (_origin, target) => (target.startsWith("google/protobuf/") ? target : join(protoDir, target));
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
  return root;
}
