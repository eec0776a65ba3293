"""Kinesis Data Analytics' error texts, written down once (issue 14: every text a door sends is in
a catalogue; `broker/error_messages.py` holds the Kinesis ones, `broker/firehose/messages.py`
Firehose's, `broker/video/messages.py` Kinesis Video's). Pure: strings in, strings out;
importable from the pure rules (`applications`, `snapshots`, `sql`) as from the services and the
engine.

The words are the ones the services sent before they were gathered here (their tests pin them).
botocore's kinesisanalytics and kinesisanalyticsv2 models and AWS's API references document each
error's meaning and status, not the text AWS sends with it, so where no AWS answer was on record
the words are Shoal's own, in AWS's style: a sentence naming the application, the member and the
rule. The SQL texts (CodeValidationException) name the line and the construct, as AWS's do.
"""

from __future__ import annotations

# --- applications.py --------------------------------------------------------------------------


def application_not_found(*, name: object, account_id: object) -> str:
    return f"Application {name} not found in account {account_id}."


def member_not_found(*, what: object, wanted: object, name: object) -> str:
    return f"{what} {wanted} not found in application {name}."


def sql_only_configuration(
    *, what: object, sql_runtime: object, name: object, runtime: object
) -> str:
    return f"{what} belong to {sql_runtime} applications; application {name} is {runtime}."


def flink_only_operation(*, operation: object, name: object, sql_runtime: object) -> str:
    return (
        f"{operation} is supported for Managed Service for Apache Flink applications only; "
        f"application {name} is {sql_runtime}."
    )


def version_mismatch(*, version_id: object, expected: object) -> str:
    return (
        f"Current application version is {version_id}, but the request gave "
        f"CurrentApplicationVersionId {expected}."
    )


def wrong_status(*, name: object, status: object, wanted: object) -> str:
    return f"Application {name} is in {status} state; the operation needs {wanted}."


def input_parallelism_range(*, maximum: object) -> str:
    return f"InputParallelism Count must be between 1 and {maximum}."


INPUT_NEEDS_ONE_SOURCE = "An input needs exactly one of KinesisStreamsInput, KinesisFirehoseInput."
OUTPUT_NEEDS_ONE_DESTINATION = (
    "An output needs exactly one of KinesisStreamsOutput, KinesisFirehoseOutput, LambdaOutput."
)


def sql_parts_on_other_runtime(*, sql_runtime: object, runtime: object) -> str:
    return (
        f"Inputs, outputs, reference data sources and SQL code belong to {sql_runtime} "
        f"applications, not to a {runtime} application."
    )


def inputs_max(*, maximum: object) -> str:
    return f"An application has at most {maximum} input."


def outputs_max(*, maximum: object) -> str:
    return f"An application has at most {maximum} outputs."


def application_tags_max(*, maximum: object) -> str:
    return f"An application has at most {maximum} tags."


def reference_data_sources_max(*, maximum: object) -> str:
    return f"An application has at most {maximum} reference source."


OUTPUTS_SHARE_A_STREAM = "Two outputs write the same in-application stream."


def runtime_change_refused(*, name: object, from_runtime: object, to_runtime: object) -> str:
    return f"Application {name} cannot change from {from_runtime} to {to_runtime}."


VPC_NOT_FOR_SQL = "VPC configurations are not supported for SQL applications."


def maintenance_window_invalid(*, window_start: object) -> str:
    return f"{window_start} is not a time of day in HH:MM form."


def already_has_input(*, name: object) -> str:
    return f"Application {name} already has an input."


def already_has_reference_data_source(*, name: object) -> str:
    return f"Application {name} already has a reference data source."


def already_logs_to(*, name: object, log_stream_arn: object) -> str:
    return f"Application {name} already logs to {log_stream_arn}."


def already_has_input_processing(*, input_id: object) -> str:
    return f"Input {input_id} already has an input processing configuration."


def no_input_processing(*, input_id: object) -> str:
    return f"Input {input_id} has no input processing configuration."


def no_input(*, name: object) -> str:
    return f"Application {name} has no input to read from."


def runtime_not_run(*, name: object, runtime: object, sql_runtime: object) -> str:
    return (
        f"Application {name} is {runtime}: Shoal stores applications of that runtime but runs "
        f"only {sql_runtime} (Kinesis Data Analytics SQL) applications."
    )


def reader_changed(*, name: object, reader: object, wanted: object) -> str:
    return f"Application {name} reads as {reader} now, not {wanted}."


def create_timestamp_mismatch(*, name: object) -> str:
    return f"CreateTimestamp does not match application {name}'s creation time."


def already_deleting(*, name: object) -> str:
    return f"Application {name} is already being deleted."


# --- service.py -------------------------------------------------------------------------------


def not_a_stream_arn(*, arn: object) -> str:
    return f"{arn} is not a Kinesis stream ARN."


def resource_not_found(*, arn: object) -> str:
    return f"Resource {arn} not found."


DISCOVERY_SOURCE_ONE_OF = "Give one of ResourceARN and S3Configuration."
NO_RECORDS_TO_SAMPLE = "No records were found to sample."


def output_stream_not_created(*, output_id: object, name: object, stream: object) -> str:
    return (
        f"Output {output_id} of application {name} reads the in-application stream {stream}, "
        "which the application code does not create."
    )


# --- service_v2.py ----------------------------------------------------------------------------


def rollback_needs_status(*, name: object, status: object, runtime: object) -> str:
    return (
        f"Application {name} is {status}; a rollback needs an UPDATING, AUTOSCALING or RUNNING"
        f" application (Shoal does not run {runtime})."
    )


def no_application_snapshot(*, name: object, snapshot_name: object) -> str:
    return f"Application {name} has no snapshot {snapshot_name}."


def application_snapshot_needs_running(*, name: object, status: object, runtime: object) -> str:
    return (
        f"Application {name} is {status}; snapshots are taken of RUNNING applications (Shoal "
        f"does not run {runtime})."
    )


def create_snapshot_needs_running(
    *, name: object, status: object, runtime: object, sql_runtime: object
) -> str:
    return (
        f"Application {name} is {status}; CreateSnapshot needs a RUNNING application (Shoal "
        f"stores {runtime} applications but runs only {sql_runtime}). ImportSnapshot takes a "
        "savepoint from S3."
    )


def snapshot_operation_not_found(*, wanted: object, name: object) -> str:
    return f"Operation {wanted} not found for snapshot {name}."


def application_operation_not_found(*, wanted: object, name: object) -> str:
    return f"Operation {wanted} not found for application {name}."


def presigned_url_needs_running(
    *, name: object, status: object, runtime: object, sql_runtime: object
) -> str:
    return (
        f"Application {name} is {status}; a presigned URL needs a RUNNING application (Shoal "
        f"stores {runtime} applications but runs only {sql_runtime})."
    )


SQL_CODE_IS_PLAINTEXT = "A SQL application's code has CodeContentType PLAINTEXT."
SQL_CODE_IS_TEXT_CONTENT = "A SQL application's code is TextContent."


def version_not_found(*, name: object, wanted: object) -> str:
    return f"Application {name} has no version {wanted}."


def snapshot_exists(*, snapshot_name: object) -> str:
    return f"Snapshot {snapshot_name} already exists."


VERSION_OR_TOKEN_REQUIRED = "CurrentApplicationVersionId or ConditionalToken is required."


def url_type_not_for_sql(*, url_type: object, sql_runtime: object) -> str:
    return f"{url_type} is not available for {sql_runtime} applications."


def zeppelin_url_not_for_runtime(*, name: object, runtime: object) -> str:
    return f"ZEPPELIN_UI_URL is for Studio notebooks; {name} is {runtime}."


def next_token_invalid(*, token: object) -> str:
    return f"NextToken {token} is not valid."


def members_not_for_sql(*, extra: object) -> str:
    return f"{extra} is not supported for SQL applications."


APPLICATION_MODE_NOT_FOR_SQL = "ApplicationMode is not supported for SQL applications."


def sql_configuration_not_for_runtime(*, sql_runtime: object, runtime: object) -> str:
    return f"SqlApplicationConfiguration is for {sql_runtime} applications, not {runtime}."


def conditional_token_mismatch(*, name: object, version_id: object) -> str:
    return f"ConditionalToken does not match application {name}'s current version {version_id}."


def sql_configuration_update_not_for_runtime(*, sql_runtime: object) -> str:
    return f"SqlApplicationConfigurationUpdate is for {sql_runtime} applications."


# --- snapshots.py -----------------------------------------------------------------------------


def snapshot_not_found(*, name: object) -> str:
    return f"Snapshot {name} not found."


def snapshot_tags_max(*, maximum: object) -> str:
    return f"A snapshot has at most {maximum} tags."


def snapshot_not_ready(*, name: object, status: object, operation: object) -> str:
    return f"Snapshot {name} is {status}; {operation} needs a READY snapshot."


def snapshot_timestamp_mismatch(*, name: object) -> str:
    return f"SnapshotCreationTimestamp does not match snapshot {name}'s."


def snapshot_not_deletable(*, name: object, status: object) -> str:
    return f"Snapshot {name} is {status}; only READY or FAILED snapshots are deleted."


def snapshot_operation_in_progress(*, name: object) -> str:
    return f"Snapshot {name} has an operation in progress."


def at_most_one_of(*, members: object, given: object) -> str:
    return f"Give at most one of {members} (the request gave {given})."


def snapshot_export_in_progress(*, name: object) -> str:
    return f"An export of snapshot {name} is already in progress."


# --- runner.py --------------------------------------------------------------------------------


def input_gone(*, arn: object) -> str:
    return f"The input of {arn} is gone."


# --- sql.py -----------------------------------------------------------------------------------


def construct_not_run(*, line: object, construct: object, suffix: object) -> str:
    return f"Line {line}: Shoal cannot run {construct}{suffix}."


def statements_max(*, maximum: object) -> str:
    return f"An application has at most {maximum} statements."


DATE_FORMAT_NOT_LITERAL = "A date format must be a string literal."
SIMILAR_TO_NOT_LITERAL = "SIMILAR TO needs a string literal pattern."


def unreadable_sql(*, error: object) -> str:
    return f"Unreadable SQL: {error}"


def syntax_error(*, where: object, description: object, highlight: object) -> str:
    return f"Line {where}: {description} near '{highlight}'."


def unknown_sql_type(*, sql_type: object) -> str:
    return f"Unknown SqlType {sql_type}."


def date_format_letter_not_translated(*, text: object, letters: object) -> str:
    return f"The date format '{text}' uses {letters}, which Shoal does not translate."


def pump_target_undefined(*, line: object, pump: object, target: object) -> str:
    return (
        f"Line {line}: pump {pump} inserts into {target}, which no CREATE OR REPLACE STREAM "
        "defines."
    )


def date_format_unclosed_quote(*, text: object) -> str:
    return f"Unclosed quote in '{text}'."


# --- duckdb_engine.py -------------------------------------------------------------------------


def pump_source_undefined(*, line: object, pump: object, source: object) -> str:
    return (
        f"Line {line}: pump {pump} reads {source}, which is neither an input's in-application "
        "stream nor a CREATE OR REPLACE STREAM."
    )


def pump_scoring_refused(*, line: object, pump: object, function: object, error: object) -> str:
    return f"Line {line}: pump {pump}: {function}: {error}."


def joins_without_reference_data(*, names: object) -> str:
    return f"The code joins {names}, but the application has no reference data source."


def window_column_not_timestamp(
    *, line: object, pump: object, column: object, sql_type: object
) -> str:
    return (
        f"Line {line}: the window of pump {pump} is over {column}, a {sql_type}; it must be a "
        "TIMESTAMP."
    )


def stream_join_without_window(*, line: object, pump: object, table: object) -> str:
    return (
        f"Line {line}: Shoal cannot run a JOIN of pump {pump} with stream {table} without a "
        f"window: write JOIN {table} OVER (RANGE INTERVAL 'n' unit PRECEDING) AS alias ON a "
        "condition."
    )


def join_not_reference_table(*, line: object, pump: object, table: object) -> str:
    return (
        f"Line {line}: pump {pump} joins {table}, which is not a reference data source's table"
        " of the application."
    )


def join_stream_undefined(*, line: object, pump: object, right: object) -> str:
    return (
        f"Line {line}: pump {pump} joins {right}, which is neither an input's in-application "
        "stream nor a CREATE OR REPLACE STREAM."
    )


def pump_refused_by_engine(*, line: object, pump: object, message: object) -> str:
    return f"Line {line}: pump {pump}: {message}"


# --- The metadata transitions (meta/transitions/analytics_applications.py) -----------------


def application_exists(*, name: object) -> str:
    return f"Application {name} already exists."


def applications_limit(*, maximum: object) -> str:
    return f"The account has {maximum} applications, its limit."


def runs_elsewhere(*, name: object, owner: object) -> str:
    return f"Application {name} runs elsewhere: {owner} does not hold its placement."


def malformed_request(*, operation: object, error: object) -> str:
    return f"{operation}: malformed request ({error!r})."


# --- The rules' own errors, which the answers carry (CodeValidation's details, UnableToDetect-
#     Schema, reference data, the error_stream's rows) -------------------------------------------

# --- anomaly.py -------------------------------------------------------------------------------


def anomaly_too_many_arguments(*, function: object, most: object) -> str:
    return f"{function} takes at most {most} arguments after its CURSOR"


ANOMALY_DIRECTIONALITY = "withDirectionality must be TRUE or FALSE"
ANOMALY_NO_NUMERIC_COLUMN = "the CURSOR has no numeric column to score"


def anomaly_integer_range(*, name: object, lowest: object, highest: object) -> str:
    return f"{name} must be an integer from {lowest} to {highest}"


def anomaly_decimal_column(*, name: object) -> str:
    return f"column {name} is a DECIMAL; cast it to DOUBLE"


# --- hotspots.py ------------------------------------------------------------------------------

HOTSPOTS_ARGUMENTS = (
    "HOTSPOTS takes windowSize, scanRadius and minimumNumberOfPointsInAHotspot after its CURSOR"
)


def hotspots_window_size(*, lowest: object, highest: object) -> str:
    return f"windowSize must be an integer from {lowest} to {highest}"


HOTSPOTS_SCAN_RADIUS = "scanRadius must be a number greater than 0"
HOTSPOTS_MINIMUM_POINTS = "minimumNumberOfPointsInAHotspot must be from 2 to windowSize"

# --- log_parsing.py ---------------------------------------------------------------------------


def log_pattern_without_group(*, pattern: object) -> str:
    return f"the pattern {pattern!r} has no group: it would parse no column"


def log_empty_column_description(*, spec: object) -> str:
    return f"an empty column description in {spec!r}"


LOG_EMPTY_DELIMITER = "an empty delimiter"


def log_format_without_specifier(*, format_string: object) -> str:
    return (
        f"the format {format_string!r} has no specifier (Shoal runs COMMON, COMMON WITH VHOST,"
        " NCSA EXTENDED, REFERER, AGENT, IIS and Apache format strings)"
    )


def log_column_description_invalid(*, description: object, expected: object) -> str:
    return f"the column description {description!r} is not {expected}"


def log_format_string_not_run(*, description: object) -> str:
    return f"a format string in {description!r} (not run by Shoal)"


def log_quote_string(*, quote: object) -> str:
    return f"the quote string {quote!r} (one or two characters: begin and end quote)"


def log_column_count(*, count: object) -> str:
    return f"{count} columns"


def log_column_type(*, name: object, error: object) -> str:
    return f"the type of column {name}: {error}"


def log_unclosed_string(*, pattern: object) -> str:
    return f"an unclosed string in {pattern!r}"


def fast_regex_construct_not_run(*, char: object, pattern: object) -> str:
    return (
        f"{char!r} in the Fast Regex {pattern!r} (intersection, complement, empty language, "
        "named patterns and numeric intervals are not run by Shoal)"
    )


def fast_regex_invalid(*, pattern: object, error: object) -> str:
    return f"the Fast Regex {pattern!r} is not valid: {error}"


def fast_regex_unclosed_class(*, pattern: object) -> str:
    return f"an unclosed class in {pattern!r}"


def fast_regex_unclosed_group(*, pattern: object) -> str:
    return f"an unclosed '(' in {pattern!r}"


def fast_regex_unmatched_parenthesis(*, pattern: object) -> str:
    return f"an unmatched ')' in {pattern!r}"


def fast_regex_quantifier_without_operand(*, pattern: object) -> str:
    return f"a quantifier with nothing before it in {pattern!r}"


def fast_regex_unclosed_repetition(*, pattern: object) -> str:
    return f"an unclosed repetition in {pattern!r}"


# --- records.py -------------------------------------------------------------------------------


def record_not_a_timestamp(*, value: object) -> str:
    return f"{value!r} is not a TIMESTAMP"


def record_sql_type_not_supported(*, sql_type: object) -> str:
    return f"SqlType {sql_type} is not supported"


def record_mapping_not_json_path(*, path: object) -> str:
    return f"mapping {path} is not a JSONPath"


def record_column_count(*, count: object, expected: object) -> str:
    return f"the line has {count} columns, the schema {expected}"


def record_value_not_of_type(*, value: object, sql_type: object) -> str:
    return f"{value!r} is not a {sql_type}"


RECORD_NOT_UTF8 = "the record is not UTF-8"
RECORD_NOT_JSON = "the record is not JSON"

# --- reference_data.py ------------------------------------------------------------------------


def not_a_bucket_arn(*, bucket_arn: object) -> str:
    return f"{bucket_arn} is not an S3 bucket ARN."


def reference_object_schema_mismatch(*, error: object) -> str:
    return f"the object does not match its schema: {error}"


def reference_object_too_large(*, bucket: object, key: object) -> str:
    return f"s3://{bucket}/{key} is larger than 1 GiB."


def reference_object_unreadable(*, bucket: object, key: object, error: object) -> str:
    return f"s3://{bucket}/{key}: {error}"


# --- runner.py --------------------------------------------------------------------------------


def preprocessor_result(*, result: object) -> str:
    return f"the Lambda preprocessor answered {result}"


# --- sql.py -----------------------------------------------------------------------------------


def function_needs_literal(*, function: object, argument: object) -> str:
    return (
        f"{function} needs a literal where it has {argument} (its columns are known when the "
        "application is created)"
    )


def log_parse_arguments(*, name: object, count: object) -> str:
    return (
        f"{name} with {count} arguments (Shoal runs REGEX_LOG_PARSE(text, pattern), "
        "VARIABLE_COLUMN_LOG_PARSE(text, columns, delimiter), FIXED_COLUMN_LOG_PARSE(text, "
        "columns), W3C_LOG_PARSE(text, format), SYS_LOG_PARSE(text) and "
        "FAST_REGEX_LOG_PARSER(text, pattern))"
    )
