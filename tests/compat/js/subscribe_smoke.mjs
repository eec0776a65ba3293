// SubscribeToShard (enhanced fan-out) with the AWS SDK for JavaScript v3, against Shoal.
// The client keeps its default request handler (NodeHttp2Handler: HTTP/2, h2c with prior
// knowledge on http://), which is the only transport the SDK uses for event streams.
//
//   node subscribe_smoke.mjs --endpoint http://127.0.0.1:4567 [--timeout-ms 60000]
//
// Calls: CreateStream -> DescribeStreamSummary until ACTIVE -> RegisterStreamConsumer ->
// DescribeStreamConsumer until ACTIVE -> PutRecord -> SubscribeToShard (TRIM_HORIZON): the
// first record must arrive; a second SubscribeToShard for the same consumer and shard while
// the first is open is tried (the test expects ResourceInUseException); then a record put
// while subscribed must be pushed.
// Prints a JSON summary on stdout; exits 1 on any mismatch or error.

import http2 from "node:http2";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

import {
  KinesisClient,
  CreateStreamCommand,
  DescribeStreamConsumerCommand,
  DescribeStreamSummaryCommand,
  PutRecordCommand,
  RegisterStreamConsumerCommand,
  SubscribeToShardCommand,
} from "@aws-sdk/client-kinesis";

const { values: args } = parseArgs({
  options: {
    endpoint: { type: "string" },
    "timeout-ms": { type: "string", default: "60000" },
  },
  strict: true,
});

const endpoint = args.endpoint;
const deadline = Date.now() + Number.parseInt(args["timeout-ms"], 10);
const streamName = `js-fanout-${Date.now()}-${randomBytes(3).toString("hex")}`;
const shardId = "shardId-000000000000";
const summary = { ok: false, endpoint, stream: streamName, events: 0, records: [], http2Sessions: 0 };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const realConnect = http2.connect;
http2.connect = function connect(authority, ...rest) {
  summary.http2Sessions += 1;
  return realConnect.call(this, authority, ...rest);
};

class Mismatch extends Error {}

function check(condition, message) {
  if (!condition) throw new Mismatch(message);
}

async function until(what, probe) {
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Mismatch(`deadline passed while waiting for ${what}`);
    await sleep(50);
  }
}

const client = new KinesisClient({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "shoal-dummy-key", secretAccessKey: "shoal-dummy-secret" },
  maxAttempts: 1,
});

try {
  await client.send(new CreateStreamCommand({ StreamName: streamName, ShardCount: 1 }));
  let streamArn;
  await until("the stream", async () => {
    const out = await client.send(new DescribeStreamSummaryCommand({ StreamName: streamName }));
    streamArn = out.StreamDescriptionSummary.StreamARN;
    return out.StreamDescriptionSummary.StreamStatus === "ACTIVE";
  });
  const registered = await client.send(
    new RegisterStreamConsumerCommand({ StreamARN: streamArn, ConsumerName: "js" }),
  );
  const consumerArn = registered.Consumer.ConsumerARN;
  await until("the consumer", async () => {
    const out = await client.send(new DescribeStreamConsumerCommand({ ConsumerARN: consumerArn }));
    return out.ConsumerDescription.ConsumerStatus === "ACTIVE";
  });
  const first = await client.send(
    new PutRecordCommand({ StreamName: streamName, PartitionKey: "a", Data: Buffer.from("first") }),
  );
  const subscription = await client.send(
    new SubscribeToShardCommand({
      ConsumerARN: consumerArn,
      ShardId: shardId,
      StartingPosition: { Type: "TRIM_HORIZON" },
    }),
  );
  let continuation;
  for await (const event of subscription.EventStream) {
    check(event.SubscribeToShardEvent, `unexpected event ${JSON.stringify(Object.keys(event))}`);
    const body = event.SubscribeToShardEvent;
    summary.events += 1;
    for (const record of body.Records) {
      summary.records.push(Buffer.from(record.Data).toString());
      if (summary.records.length === 1) {
        check(record.SequenceNumber === first.SequenceNumber, "the first record's number");
        try {
          await client.send(
            new SubscribeToShardCommand({
              ConsumerARN: consumerArn,
              ShardId: shardId,
              StartingPosition: { Type: "LATEST" },
            }),
          );
          summary.secondSubscription = "accepted";
        } catch (error) {
          summary.secondSubscription = error.name;
        }
        await client.send(
          new PutRecordCommand({ StreamName: streamName, PartitionKey: "b", Data: Buffer.from("pushed") }),
        );
      }
    }
    continuation = body.ContinuationSequenceNumber;
    check(typeof body.MillisBehindLatest === "number", "MillisBehindLatest");
    if (summary.records.length >= 2) break;
    if (Date.now() > deadline) throw new Mismatch("deadline passed while subscribed");
  }
  check(summary.records.join(",") === "first,pushed", `records ${summary.records}`);
  summary.continuation = continuation;
  summary.ok = true;
} catch (error) {
  summary.error = `${error.name}: ${error.message}`;
  console.error(error);
}
console.log(JSON.stringify(summary));
client.destroy();
process.exit(summary.ok ? 0 : 1);
