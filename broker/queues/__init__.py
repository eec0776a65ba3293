"""Kinesis queues: a stream's records delivered one by one, with visibility timeouts,
acknowledgements, redelivery and a built-in dead-letter queue (CreateQueue,
ReceiveQueueRecords, AcknowledgeQueueRecords, ... of the 2013-12-02 model).

- `state`: the queue definitions and every record's delivery state as metadata values, and
  the pure rules over them (what a receive may claim, what an acknowledgement or a visibility
  change does). No I/O, no clock: `now_ms` comes in.
- `operations`: the twelve operations behind both doors: they read the stream's records
  through the records API and change delivery state only by metadata commands, so what a
  queue has delivered and acknowledged is durable and replicated by the metadata quorum.
"""
