"""The one error table: every error a client can see, in both front doors.

Internal code raises `ShoalError(ErrorCode.X, message)`. `wire/error_mapping.py` turns it into
a gRPC status (with the Kinesis name in a structured `ErrorInfo`) or an AWS JSON/CBOR error body
(`__type` and `message`, with the HTTP status below). No other module builds wire errors.

Add a code only when a caller would react to it differently (FoundationDB's rule). Anything
unexpected becomes INTERNAL_FAILURE, with the details in the log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorSpec:
    """How one error looks on each wire."""

    kinesis_name: str
    http_status: int
    grpc_status: str  # a grpc.StatusCode member name; mapped in wire/error_mapping.py
    retryable: bool
    default_message: str


class ErrorCode(enum.Enum):
    """Every client-visible error. Names and statuses follow botocore's Kinesis model."""

    RESOURCE_NOT_FOUND = ErrorSpec(
        kinesis_name="ResourceNotFoundException",
        http_status=400,
        grpc_status="NOT_FOUND",
        retryable=False,
        default_message="Requested resource not found.",
    )
    RESOURCE_IN_USE = ErrorSpec(
        kinesis_name="ResourceInUseException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The resource is not available for this operation.",
    )
    INVALID_ARGUMENT = ErrorSpec(
        kinesis_name="InvalidArgumentException",
        http_status=400,
        grpc_status="INVALID_ARGUMENT",
        retryable=False,
        default_message="A specified parameter exceeds its restrictions.",
    )
    VALIDATION = ErrorSpec(
        kinesis_name="ValidationException",
        http_status=400,
        grpc_status="INVALID_ARGUMENT",
        retryable=False,
        default_message="The request does not satisfy the service's constraints.",
    )
    LIMIT_EXCEEDED = ErrorSpec(
        kinesis_name="LimitExceededException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=True,
        default_message="The requested resource exceeds the maximum number allowed.",
    )
    THROUGHPUT_EXCEEDED = ErrorSpec(
        kinesis_name="ProvisionedThroughputExceededException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=True,
        default_message="Rate exceeded.",
    )
    EXPIRED_ITERATOR = ErrorSpec(
        kinesis_name="ExpiredIteratorException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="Iterator expired.",
    )
    EXPIRED_NEXT_TOKEN = ErrorSpec(
        kinesis_name="ExpiredNextTokenException",
        http_status=400,
        grpc_status="INVALID_ARGUMENT",
        retryable=False,
        default_message="The pagination token passed to the operation is expired.",
    )
    ACCESS_DENIED = ErrorSpec(
        kinesis_name="AccessDeniedException",
        http_status=400,
        grpc_status="PERMISSION_DENIED",
        retryable=False,
        default_message="Access denied.",
    )
    INTERNAL_FAILURE = ErrorSpec(
        kinesis_name="InternalFailure",
        http_status=500,
        grpc_status="INTERNAL",
        retryable=True,
        default_message="Internal Service Failure",
    )
    SERIALIZATION = ErrorSpec(
        # A body that is not valid JSON/CBOR, or a member of the wrong type (AWS JSON protocol).
        kinesis_name="SerializationException",
        http_status=400,
        grpc_status="INVALID_ARGUMENT",
        retryable=False,
        default_message="Start of structure or map found where not expected.",
    )
    UNKNOWN_OPERATION = ErrorSpec(
        kinesis_name="UnknownOperationException",
        http_status=400,
        grpc_status="UNIMPLEMENTED",
        retryable=False,
        default_message="",
    )
    MISSING_AUTHENTICATION_TOKEN = ErrorSpec(
        kinesis_name="MissingAuthenticationTokenException",
        http_status=400,
        grpc_status="UNAUTHENTICATED",
        retryable=False,
        default_message="Missing Authentication Token",
    )
    INCOMPLETE_SIGNATURE = ErrorSpec(
        kinesis_name="IncompleteSignatureException",
        http_status=400,
        grpc_status="UNAUTHENTICATED",
        retryable=False,
        default_message="The request signature does not conform to AWS standards.",
    )
    INVALID_SIGNATURE = ErrorSpec(
        kinesis_name="InvalidSignatureException",
        http_status=400,
        grpc_status="UNAUTHENTICATED",
        retryable=False,
        default_message=(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. "
            "Consult the service documentation for details."
        ),
    )
    UNRECOGNIZED_CLIENT = ErrorSpec(
        kinesis_name="UnrecognizedClientException",
        http_status=400,
        grpc_status="UNAUTHENTICATED",
        retryable=False,
        default_message="The security token included in the request is invalid.",
    )
    UNAVAILABLE = ErrorSpec(
        # Not in the Kinesis model as such; AWS answers an overloaded or leaderless service
        # with 503 ServiceUnavailable, which botocore retries.
        kinesis_name="ServiceUnavailable",
        http_status=503,
        grpc_status="UNAVAILABLE",
        retryable=True,
        default_message="The service is unavailable; retry.",
    )

    # --- Kinesis Video Streams (kinesisvideo, kinesis-video-media, -archived-media models) --
    # The video models give some names other statuses than Kinesis' (ResourceNotFound is a
    # 404 there); those get their own codes with the same wire name.
    VIDEO_RESOURCE_NOT_FOUND = ErrorSpec(
        kinesis_name="ResourceNotFoundException",
        http_status=404,
        grpc_status="NOT_FOUND",
        retryable=False,
        default_message="The requested stream is not found or not active.",
    )
    VERSION_MISMATCH = ErrorSpec(
        kinesis_name="VersionMismatchException",
        http_status=400,
        grpc_status="ABORTED",
        retryable=False,
        default_message="The stream version that you specified is not the latest version.",
    )
    ACCOUNT_STREAM_LIMIT_EXCEEDED = ErrorSpec(
        kinesis_name="AccountStreamLimitExceededException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=False,
        default_message="The number of streams created for the account is too high.",
    )
    ACCOUNT_CHANNEL_LIMIT_EXCEEDED = ErrorSpec(
        kinesis_name="AccountChannelLimitExceededException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=False,
        default_message="You have reached the maximum limit of active signaling channels for "
        "this Amazon Web Services account in this region.",
    )
    TAGS_PER_RESOURCE_EXCEEDED = ErrorSpec(
        kinesis_name="TagsPerResourceExceededLimitException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=False,
        default_message="You have exceeded the limit of tags that you can associate with the "
        "resource. A Kinesis video stream can support up to 50 tags.",
    )
    CLIENT_LIMIT_EXCEEDED = ErrorSpec(
        kinesis_name="ClientLimitExceededException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=True,
        default_message="Kinesis Video Streams has throttled the request because you have "
        "exceeded the limit of allowed client calls.",
    )
    NOT_AUTHORIZED = ErrorSpec(
        kinesis_name="NotAuthorizedException",
        http_status=401,
        grpc_status="PERMISSION_DENIED",
        retryable=False,
        default_message="The caller is not authorized to perform this operation.",
    )
    STREAM_EDGE_CONFIGURATION_NOT_FOUND = ErrorSpec(
        kinesis_name="StreamEdgeConfigurationNotFoundException",
        http_status=404,
        grpc_status="NOT_FOUND",
        retryable=False,
        default_message="The stream has no edge configuration.",
    )
    NO_DATA_RETENTION = ErrorSpec(
        kinesis_name="NoDataRetentionException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The stream is not retaining data (DataRetentionInHours is 0).",
    )
    INVALID_MEDIA_FRAME = ErrorSpec(
        kinesis_name="InvalidMediaFrameException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="One or more frames in the requested clip could not be parsed.",
    )
    # --- Kinesis Data Analytics (kinesisanalytics 2015-08-14; broker/analytics/) -----------
    CONCURRENT_MODIFICATION = ErrorSpec(
        kinesis_name="ConcurrentModificationException",
        http_status=400,
        grpc_status="ABORTED",
        retryable=False,
        default_message="The resource was modified by another request; describe it again.",
    )
    CODE_VALIDATION = ErrorSpec(
        kinesis_name="CodeValidationException",
        http_status=400,
        grpc_status="INVALID_ARGUMENT",
        retryable=False,
        default_message="The application code is not valid.",
    )
    INVALID_APPLICATION_CONFIGURATION = ErrorSpec(
        kinesis_name="InvalidApplicationConfigurationException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The application configuration is not valid.",
    )
    UNSUPPORTED_OPERATION = ErrorSpec(
        kinesis_name="UnsupportedOperationException",
        http_status=400,
        grpc_status="UNIMPLEMENTED",
        retryable=False,
        default_message="The operation is not supported for this application.",
    )
    UNABLE_TO_DETECT_SCHEMA = ErrorSpec(
        kinesis_name="UnableToDetectSchemaException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The data format is not valid; Shoal could not detect a schema.",
    )
    # --- KMS, as Kinesis reports it (StartStreamEncryption, PutRecord(s) of encrypted streams)
    KMS_NOT_FOUND = ErrorSpec(
        kinesis_name="KMSNotFoundException",
        http_status=400,
        grpc_status="NOT_FOUND",
        retryable=False,
        default_message="The specified KMS key was not found.",
    )
    KMS_DISABLED = ErrorSpec(
        kinesis_name="KMSDisabledException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The specified KMS key is disabled.",
    )
    KMS_INVALID_STATE = ErrorSpec(
        kinesis_name="KMSInvalidStateException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The state of the specified KMS key is not valid for this request.",
    )
    KMS_ACCESS_DENIED = ErrorSpec(
        kinesis_name="KMSAccessDeniedException",
        http_status=400,
        grpc_status="PERMISSION_DENIED",
        retryable=False,
        default_message="The KMS key is not accessible to the caller.",
    )
    KMS_OPT_IN_REQUIRED = ErrorSpec(
        kinesis_name="KMSOptInRequired",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The AWS access key ID needs a subscription for the service.",
    )
    KMS_THROTTLING = ErrorSpec(
        kinesis_name="KMSThrottlingException",
        http_status=400,
        grpc_status="RESOURCE_EXHAUSTED",
        retryable=True,
        default_message="The KMS request was throttled.",
    )
    # --- Data Firehose (botocore's firehose/2015-08-04 model; issue 11) ------------------------
    SERVICE_UNAVAILABLE_EXCEPTION = ErrorSpec(
        # Firehose's answer to a put over the delivery stream's throughput limits (or a put that
        # could not be made durable): the producer backs off and retries.
        kinesis_name="ServiceUnavailableException",
        http_status=500,
        grpc_status="UNAVAILABLE",
        retryable=True,
        default_message="Slow down.",
    )
    INVALID_KMS_RESOURCE = ErrorSpec(
        kinesis_name="InvalidKMSResourceException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="The KMS key cannot be used.",
    )
    INVALID_SOURCE = ErrorSpec(
        # A put to a delivery stream whose source is a Kinesis data stream (not DirectPut).
        kinesis_name="InvalidSourceException",
        http_status=400,
        grpc_status="FAILED_PRECONDITION",
        retryable=False,
        default_message="Only DirectPut delivery streams take records from producers.",
    )
    TOO_MANY_TAGS = ErrorSpec(
        kinesis_name="TooManyTagsException",
        http_status=400,
        grpc_status="INVALID_ARGUMENT",
        retryable=False,
        default_message="The resource would have more than 50 tags.",
    )

    @property
    def spec(self) -> ErrorSpec:
        value: ErrorSpec = self.value
        return value

    @property
    def kinesis_name(self) -> str:
        return self.spec.kinesis_name


class ShoalError(Exception):
    """An operating error a client should see as a Kinesis error."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        self.code = code
        self.message = message if message is not None else code.spec.default_message
        super().__init__(f"{code.kinesis_name}: {self.message}")


def error_code_by_name(kinesis_name: str) -> ErrorCode | None:
    """The ErrorCode with this Kinesis name, if any (used by clients decoding errors)."""
    for code in ErrorCode:
        if code.kinesis_name == kinesis_name:
            return code
    return None


class StartupRefused(Exception):
    """This node must not start (its data failed a check); never a client error.

    The message is one line for the operator, naming what is wrong and where the recovery is
    documented; `shoal serve` prints it and exits without a traceback."""
