"""Kinesis Data Analytics for SQL: applications, their SQL, and running them (issue 12).

Pure rules (no I/O, no asyncio, clock passed in):
    applications.py  the application record, its table in the metadata image, and the rules of
                     every configuration change (versions, ids, states)
    sql.py           the KDA SQL dialect through sqlglot (the one module importing it):
                     streams, pumps and windows, translated to the engine's SQL; refusals
                     name the line and the construct
    windows.py       tumbling-window assignment, watermarks from ROWTIME, which windows close
    records.py       input records to rows (JSON and CSV schemas, mappings, SQL types) and rows
                     to output records (JSON, CSV)
    pipeline.py      one application's in-application streams and pumps over micro-batches
    messages.py      every error text the package raises (the catalogue, issue 14)

Adapters and operations:
    duckdb_engine.py the one module importing duckdb: runs a pump's query over rows
    service.py       the kinesisanalytics operations behind both doors (AnalyticsService)
    runner.py        running applications inside the nodes as consumers of their input streams

Must not import the gateway or node (they import this).
"""
