// Shoal conformance smoke test with the AWS SDK for JavaScript v3 (@aws-sdk/client-kinesis,
// pinned in package.json). The client keeps its default request handler, NodeHttp2Handler:
// HTTP/2 for every call, h2c with prior knowledge on http://, ALPN on https://, and SigV4
// signing `:authority` instead of `host`.
//
//   node kinesis_smoke.mjs --endpoint http://127.0.0.1:4567 \
//       [--access-key AKID --secret-key SECRET] [--region us-east-1] [--stream NAME] \
//       [--shards 2] [--ca-file cert.pem] [--check-bad-secret] [--timeout-ms 60000]
//
// Environment fallbacks: SHOAL_ENDPOINT (or AWS_ENDPOINT_URL_KINESIS), AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION, SHOAL_CA_FILE. Without keys it signs with dummy ones
// (a Shoal node without aws_credentials accepts any signature).
//
// Calls: CreateStream -> DescribeStreamSummary until ACTIVE -> PutRecord -> PutRecords ->
// ListShards -> GetShardIterator -> GetRecords (every record must come back, byte for byte,
// in sequence order per shard) -> DescribeStream -> ListStreams -> DeleteStream (and
// ResourceNotFoundException once gone). Prints a JSON summary on stdout; exits 1 on any
// mismatch or error (the error goes to stderr, and into the summary as "error").

import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

import {
  KinesisClient,
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  ListShardsCommand,
  ListStreamsCommand,
  PutRecordCommand,
  PutRecordsCommand,
} from "@aws-sdk/client-kinesis";

const { values: args } = parseArgs({
  options: {
    endpoint: { type: "string" },
    "access-key": { type: "string" },
    "secret-key": { type: "string" },
    region: { type: "string" },
    stream: { type: "string" },
    shards: { type: "string", default: "2" },
    "ca-file": { type: "string" },
    "check-bad-secret": { type: "boolean", default: false },
    "timeout-ms": { type: "string", default: "60000" },
  },
  strict: true,
});

const endpoint = args.endpoint ?? process.env.SHOAL_ENDPOINT ?? process.env.AWS_ENDPOINT_URL_KINESIS;
const accessKeyId = args["access-key"] ?? process.env.AWS_ACCESS_KEY_ID ?? "shoal-dummy-key";
const secretAccessKey = args["secret-key"] ?? process.env.AWS_SECRET_ACCESS_KEY ?? "shoal-dummy-secret";
const region = args.region ?? process.env.AWS_REGION ?? "us-east-1";
const caFile = args["ca-file"] ?? process.env.SHOAL_CA_FILE;
const shardCount = Number.parseInt(args.shards, 10);
const deadline = Date.now() + Number.parseInt(args["timeout-ms"], 10);
const streamName = args.stream ?? `js-smoke-${Date.now()}-${randomBytes(3).toString("hex")}`;

if (!endpoint) {
  console.error("usage: node kinesis_smoke.mjs --endpoint http://host:port [...] (or SHOAL_ENDPOINT)");
  process.exit(2);
}

// Record every HTTP/2 session the SDK opens, to prove the calls went over HTTP/2 (and which
// protocol ALPN chose on TLS). The SDK's handler calls `http2.connect` on this same module.
const sessions = [];
const realConnect = http2.connect;
http2.connect = function connect(authority, ...rest) {
  const session = realConnect.call(this, authority, ...rest);
  const entry = { authority: String(authority), alpn: null };
  sessions.push(entry);
  session.once("connect", () => {
    entry.alpn = session.alpnProtocol ?? null;
  });
  return session;
};

// Capture what the SDK signed: the SignedHeaders list of each request's Authorization header.
const signedHeaderLists = new Set();
const captureSigned = {
  applyToStack(stack) {
    stack.add(
      (next) => async (mwArgs) => {
        const auth = mwArgs.request?.headers?.authorization ?? mwArgs.request?.headers?.Authorization;
        const match = /SignedHeaders=([^,\s]+)/.exec(auth ?? "");
        if (match) signedHeaderLists.add(match[1]);
        return next(mwArgs);
      },
      { step: "finalizeRequest", priority: "low", name: "shoalCaptureSignedHeaders" },
    );
  },
};

function makeClient(secret) {
  const config = {
    endpoint,
    region,
    credentials: { accessKeyId, secretAccessKey: secret },
    maxAttempts: 1, // a retry would hide a first-attempt failure
  };
  if (caFile) {
    // The default handler as the Kinesis client builds it (NodeHttp2Handler with
    // disableConcurrentStreams: one HTTP/2 session per call), plus the self-signed certificate.
    // (NODE_EXTRA_CA_CERTS works too and leaves the client config untouched.)
    return import("@smithy/node-http-handler").then(({ NodeHttp2Handler }) => {
      const client = new KinesisClient({
        ...config,
        requestHandler: new NodeHttp2Handler({
          disableConcurrentStreams: true,
          nodeHttp2ConnectOptions: { ca: readFileSync(caFile) },
        }),
      });
      client.middlewareStack.use(captureSigned);
      return client;
    });
  }
  const client = new KinesisClient(config);
  client.middlewareStack.use(captureSigned);
  return Promise.resolve(client);
}

const summary = { ok: false, endpoint, region, stream: streamName, sdk: "@aws-sdk/client-kinesis", calls: [] };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Mismatch extends Error {}

function check(condition, message) {
  if (!condition) throw new Mismatch(message);
}

function checkDeadline(what) {
  if (Date.now() > deadline) throw new Mismatch(`deadline passed while ${what}`);
}

let client;

async function call(command) {
  const name = command.constructor.name.replace(/Command$/, "");
  const started = Date.now();
  try {
    const out = await client.send(command);
    summary.calls.push({ op: name, ms: Date.now() - started, status: out.$metadata?.httpStatusCode });
    return out;
  } catch (err) {
    summary.calls.push({
      op: name,
      ms: Date.now() - started,
      status: err.$metadata?.httpStatusCode,
      error: err.name,
    });
    throw err;
  }
}

async function expectError(command, names) {
  try {
    await call(command);
  } catch (err) {
    check(names.includes(err.name), `expected ${names.join("|")}, got ${err.name}: ${err.message}`);
    return err.name;
  }
  throw new Mismatch(`expected ${names.join("|")}, the call succeeded`);
}

async function waitForStatus(status) {
  for (;;) {
    const out = await call(new DescribeStreamSummaryCommand({ StreamName: streamName }));
    const d = out.StreamDescriptionSummary;
    if (d.StreamStatus === status) return d;
    checkDeadline(`waiting for ${streamName} to become ${status} (now ${d.StreamStatus})`);
    await sleep(100);
  }
}

const http2Summary = () => ({
  sessions: sessions.length,
  alpn: [...new Set(sessions.map((s) => s.alpn))],
});

const bytesEqual = (a, b) => Buffer.from(a).equals(Buffer.from(b));

async function main() {
  client = await makeClient(secretAccessKey);
  summary.handler = client.config.requestHandler?.metadata?.handlerProtocol ?? null;
  check(summary.handler === "h2", `the client's request handler is not HTTP/2: ${summary.handler}`);

  // CreateStream, then wait until ACTIVE.
  await call(new CreateStreamCommand({ StreamName: streamName, ShardCount: shardCount }));
  const active = await waitForStatus("ACTIVE");
  check(active.StreamName === streamName, `DescribeStreamSummary named ${active.StreamName}`);
  check(active.OpenShardCount === shardCount, `OpenShardCount ${active.OpenShardCount} != ${shardCount}`);
  check(/^arn:aws:kinesis:[^:]+:\d{12}:stream\//.test(active.StreamARN ?? ""), `odd ARN ${active.StreamARN}`);
  summary.streamArn = active.StreamARN;

  // PutRecord: binary data (every byte value, not UTF-8), then PutRecords with a batch.
  const sent = [];
  const first = { PartitionKey: "pk-binary", Data: new Uint8Array([...Array(256).keys()]) };
  const put = await call(new PutRecordCommand({ StreamName: streamName, ...first }));
  check(/^shardId-\d{12}$/.test(put.ShardId ?? ""), `PutRecord ShardId ${put.ShardId}`);
  check(/^\d+$/.test(put.SequenceNumber ?? ""), `PutRecord SequenceNumber ${put.SequenceNumber}`);
  sent.push({ ...first, ShardId: put.ShardId, SequenceNumber: put.SequenceNumber });

  const batch = Array.from({ length: 20 }, (_, i) => ({
    PartitionKey: `pk-${i}`,
    Data: new TextEncoder().encode(`record ${i} ${"x".repeat(i)} ✓`),
  }));
  batch.push({ PartitionKey: "pk-empty-ish", Data: randomBytes(1) });
  const puts = await call(new PutRecordsCommand({ StreamName: streamName, Records: batch }));
  check(puts.FailedRecordCount === 0, `PutRecords FailedRecordCount ${puts.FailedRecordCount}`);
  check(puts.Records?.length === batch.length, `PutRecords returned ${puts.Records?.length} results`);
  puts.Records.forEach((r, i) => {
    check(!r.ErrorCode && r.SequenceNumber && r.ShardId, `PutRecords entry ${i}: ${JSON.stringify(r)}`);
    sent.push({ ...batch[i], ShardId: r.ShardId, SequenceNumber: r.SequenceNumber });
  });
  summary.recordsPut = sent.length;

  // ListShards.
  const listed = await call(new ListShardsCommand({ StreamName: streamName }));
  const shardIds = (listed.Shards ?? []).map((s) => s.ShardId);
  check(shardIds.length === shardCount, `ListShards returned ${shardIds.length} shards`);
  for (const s of listed.Shards) {
    check(s.HashKeyRange?.StartingHashKey !== undefined, `shard ${s.ShardId} has no hash key range`);
    check(s.SequenceNumberRange?.StartingSequenceNumber, `shard ${s.ShardId} has no sequence range`);
  }
  for (const r of sent) check(shardIds.includes(r.ShardId), `record went to unknown shard ${r.ShardId}`);

  // GetShardIterator (TRIM_HORIZON) + GetRecords on every shard until all records are back.
  const received = new Map(shardIds.map((id) => [id, []]));
  const now = Date.now();
  for (const shardId of shardIds) {
    const it = await call(
      new GetShardIteratorCommand({ StreamName: streamName, ShardId: shardId, ShardIteratorType: "TRIM_HORIZON" }),
    );
    check(typeof it.ShardIterator === "string" && it.ShardIterator.length > 0, "empty ShardIterator");
    let iterator = it.ShardIterator;
    const want = sent.filter((r) => r.ShardId === shardId).length;
    while (received.get(shardId).length < want) {
      checkDeadline(`reading ${shardId} (${received.get(shardId).length}/${want} records)`);
      const got = await call(new GetRecordsCommand({ ShardIterator: iterator, Limit: 1000 }));
      check(typeof got.MillisBehindLatest === "number", "GetRecords without MillisBehindLatest");
      for (const rec of got.Records ?? []) {
        const ts = rec.ApproximateArrivalTimestamp;
        check(ts instanceof Date && Math.abs(ts.getTime() - now) < 10 * 60 * 1000,
          `ApproximateArrivalTimestamp ${ts?.toISOString?.() ?? ts} is not near now (seconds vs milliseconds?)`);
        received.get(shardId).push(rec);
      }
      check(got.NextShardIterator, `GetRecords on open shard ${shardId} returned no NextShardIterator`);
      iterator = got.NextShardIterator;
      if ((got.Records ?? []).length === 0) await sleep(50);
    }
  }
  for (const shardId of shardIds) {
    const expected = sent.filter((r) => r.ShardId === shardId);
    const got = received.get(shardId);
    check(got.length === expected.length, `${shardId}: got ${got.length} records, expected ${expected.length}`);
    const bySeq = new Map(expected.map((r) => [r.SequenceNumber, r]));
    let previous = -1n;
    for (const rec of got) {
      const want = bySeq.get(rec.SequenceNumber);
      check(want, `${shardId}: unexpected record ${rec.SequenceNumber}`);
      check(rec.PartitionKey === want.PartitionKey, `${rec.SequenceNumber}: PartitionKey ${rec.PartitionKey}`);
      check(bytesEqual(rec.Data, want.Data),
        `${rec.SequenceNumber}: data ${Buffer.from(rec.Data).toString("hex")} != ${Buffer.from(want.Data).toString("hex")}`);
      const seq = BigInt(rec.SequenceNumber);
      check(seq > previous, `${shardId}: sequence numbers out of order`);
      previous = seq;
    }
  }
  summary.recordsRead = [...received.values()].reduce((n, list) => n + list.length, 0);

  // DescribeStream.
  const described = await call(new DescribeStreamCommand({ StreamName: streamName }));
  const desc = described.StreamDescription;
  check(desc.StreamName === streamName && desc.StreamStatus === "ACTIVE", `DescribeStream: ${desc.StreamStatus}`);
  check(desc.Shards?.length === shardCount, `DescribeStream listed ${desc.Shards?.length} shards`);
  check(desc.StreamARN === summary.streamArn, `DescribeStream ARN ${desc.StreamARN}`);
  check(desc.StreamCreationTimestamp instanceof Date &&
    Math.abs(desc.StreamCreationTimestamp.getTime() - now) < 10 * 60 * 1000,
    `StreamCreationTimestamp ${desc.StreamCreationTimestamp} is not near now`);

  // ListStreams (follow pagination until our stream shows up).
  let found = false;
  let token;
  let exclusiveStart;
  do {
    const out = await call(new ListStreamsCommand(token ? { NextToken: token } : { ExclusiveStartStreamName: exclusiveStart }));
    found ||= (out.StreamNames ?? []).includes(streamName);
    token = out.HasMoreStreams ? out.NextToken : undefined;
    if (out.HasMoreStreams && !token) exclusiveStart = out.StreamNames.at(-1);
    checkDeadline("listing streams");
  } while (!found && (token || exclusiveStart) && summary.calls.length < 500);
  check(found, `ListStreams does not name ${streamName}`);

  // A wrong secret must be refused (only meaningful when the node checks signatures).
  if (args["check-bad-secret"]) {
    const good = client;
    client = await makeClient(`${secretAccessKey}-wrong`);
    summary.badSecretError = await expectError(new ListStreamsCommand({}), [
      "UnrecognizedClientException",
      "InvalidSignatureException",
      "IncompleteSignatureException",
    ]);
    client.destroy();
    client = good;
  }

  // DeleteStream, then the stream is gone.
  await call(new DeleteStreamCommand({ StreamName: streamName }));
  for (;;) {
    try {
      const out = await call(new DescribeStreamSummaryCommand({ StreamName: streamName }));
      check(out.StreamDescriptionSummary.StreamStatus === "DELETING",
        `after DeleteStream the stream is ${out.StreamDescriptionSummary.StreamStatus}`);
    } catch (err) {
      if (err instanceof Mismatch) throw err;
      check(err.name === "ResourceNotFoundException", `after DeleteStream: ${err.name}: ${err.message}`);
      break;
    }
    checkDeadline("waiting for the stream to be deleted");
    await sleep(100);
  }

  summary.signedHeaders = [...signedHeaderLists];
  check(summary.signedHeaders.some((h) => h.split(";").includes(":authority")),
    `the SDK did not sign :authority (signed: ${summary.signedHeaders.join(" | ")})`);
  summary.http2 = http2Summary();
  check(sessions.length > 0, "no HTTP/2 session was opened");
  const wantAlpn = endpoint.startsWith("https:") ? "h2" : "h2c";
  check(sessions.every((s) => s.alpn === wantAlpn), `HTTP/2 sessions: ${JSON.stringify(sessions)}`);
  summary.ok = true;
}

let exitCode = 0;
try {
  await main();
} catch (err) {
  exitCode = 1;
  summary.error = {
    name: err.name,
    message: err.message,
    code: err.code,
    status: err.$metadata?.httpStatusCode,
    requestId: err.$metadata?.requestId,
    // What the server answered, when the SDK kept it.
    response: err.$response
      ? { statusCode: err.$response.statusCode, headers: err.$response.headers, body: err.$responseBodyText }
      : undefined,
  };
  summary.signedHeaders = [...signedHeaderLists];
  summary.http2 = http2Summary();
  console.error(err instanceof Mismatch ? `MISMATCH: ${err.message}` : err);
} finally {
  client?.destroy();
}
process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
process.exitCode = exitCode;
