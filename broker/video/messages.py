"""The Kinesis Video Streams family's error texts, written down once (issue 14: every text a door
sends is in a catalogue; `broker/error_messages.py` holds the Kinesis ones and the video doors',
`broker/firehose/messages.py` Firehose's). Pure: strings in, strings out.

The words are the ones the services sent before they were gathered here (their tests pin them).
botocore's models and AWS's API references document each error's meaning and status, not the
text AWS sends with it, so where no AWS answer was on record the words are Shoal's own, in AWS's
style: a sentence naming the member and the rule. The texts an error always carries ("The
requested stream is not found or not active.") are its default message in `broker/errors.py`;
the texts the metadata transitions raise too (a name already taken, a status, the retention
range) are in `broker/error_messages.py`, which `broker/meta` may import."""

from __future__ import annotations

# --- Streams and channels (control.py, channels.py) ---------------------------------------

CHANNEL_NOT_FOUND = "The requested channel is not found."
CHANNEL_NAME_OR_ARN = "Exactly one of ChannelName and ChannelARN must be specified."
NEXT_TOKEN_INVALID = "The NextToken is not valid."


def stream_name_or_arn(*, arn_member: object) -> str:
    return f"Exactly one of StreamName and {arn_member} must be specified."


def unknown_api_name(*, api_name: object) -> str:
    return f"Unknown APIName {api_name}"


def channel_type_not_supported(*, channel_type: object) -> str:
    return f"ChannelType {channel_type} is not supported."


def protocols_not_served(*, protocols: object) -> str:
    return f"Protocols {protocols} are not served by Shoal (WSS and HTTPS are)."


def channel_served_elsewhere(*, name: object, endpoint: object) -> str:
    return (
        f"The channel {name} is served at {endpoint}; ask "
        "GetSignalingChannelEndpoint for its endpoint."
    )


MEDIA_STORAGE_STREAM_ARN_REQUIRED = (
    "MediaStorageConfiguration.StreamARN is required when Status is ENABLED."
)

# --- Signaling (channels.py, signaling.py) ------------------------------------------------

NO_MASTER_CONNECTED = "No master is connected to the channel."
MASTER_DID_NOT_ANSWER = "The master did not answer the offer in time."


def viewers_at_limit(*, viewers: object) -> str:
    return f"The channel has {viewers} viewers connected, its limit."


# --- Notification and image generation configurations (channels.py) -----------------------

NOTIFICATION_URI_NOT_SNS = (
    "NotificationConfiguration.DestinationConfig.Uri must be an SNS topic ARN."
)
IMAGE_GENERATION_URI_NOT_S3 = (
    "ImageGenerationConfiguration.DestinationConfig.Uri must be an s3:// URI."
)
IMAGE_GENERATION_SAMPLING_INTERVAL = "SamplingInterval must be between 200 and 20000 ms."
FORMAT_CONFIG_ONLY_JPEG_QUALITY = "FormatConfig takes only JPEGQuality, for JPEG."
JPEG_QUALITY_RANGE = "JPEGQuality must be 1 to 100."
HEIGHT_PIXELS_MAX = "HeightPixels must be at most 2160."


def destination_region(*, region: object) -> str:
    return f"DestinationRegion must be the stream's Region, {region}."


# --- PutMedia (service.py) ----------------------------------------------------------------

PRODUCER_START_NEGATIVE = "x-amzn-producer-start-timestamp is negative."


def stream_still_creating(*, name: object) -> str:
    return f"The stream {name} is still CREATING."


def timecode_type_invalid(*, timecode_type: object) -> str:
    return f"x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, not {timecode_type!r}."


def producer_start_not_seconds(*, value: object) -> str:
    return f"x-amzn-producer-start-timestamp {value!r} is not a number of seconds."


# --- The fragment archive (archive.py) ----------------------------------------------------

STREAM_HAS_NO_LOG = "The stream has no log yet."
FRAGMENT_NOT_OF_STREAM = "The fragment number is not of this stream."


def internal_stream_not_active(*, name: object) -> str:
    return f"internal stream {name} not ACTIVE"


def archive_append_failed(*, code: object, message: object) -> str:
    """A fragment's records refused by the internal stream: its error, as PutRecords gave it."""
    return f"{code}: {message}"


# --- GetMedia, ListFragments, GetMediaForFragmentList (media.py) --------------------------

START_BEFORE_END = "StartTimestamp must be before EndTimestamp."


def fragment_number_invalid(*, member: object, number: object) -> str:
    return f"{member} {number!r} is not valid."


def selector_member_required(*, member: object, kind: object) -> str:
    return f"{member} is required for StartSelectorType {kind}."


def fragment_not_found(*, number: object) -> str:
    return f"Fragment {number} was not found."


# --- GetClip, GetImages (clips.py) --------------------------------------------------------

NO_FRAGMENTS_IN_RANGE = "No fragments found in the requested range."
IMAGES_RANGE_MAX = "EndTimestamp must follow StartTimestamp by at most 300 seconds."
IMAGES_JPEG_QUALITY_RANGE = "JPEGQuality must be between 1 and 100."


def images_sampling_interval(*, minimum: object, maximum: object) -> str:
    return f"SamplingInterval must be between {minimum} and {maximum} milliseconds."


def clip_too_large(*, fragments_max: object, bytes_max: object) -> str:
    return (
        f"The clip is over {fragments_max} fragments or {bytes_max} bytes; ask for a shorter range."
    )


# --- HLS and DASH sessions (hls.py, hls_service.py) ---------------------------------------

SESSION_TOKEN_INVALID = "The session token is not valid."
SESSION_TOKEN_EXPIRED = "The session token has expired."
SESSION_TOKEN_REQUIRED = "SessionToken is required."
SESSION_TOKEN_NAMES_NO_FRAGMENT = "The session token names no media fragment."
TIMESTAMP_RANGE_NOT_FOR_LIVE = "TimestampRange must not be set for PlaybackMode LIVE."
LIVE_REPLAY_NEEDS_START = "TimestampRange.StartTimestamp is required for PlaybackMode LIVE_REPLAY."
ON_DEMAND_NEEDS_RANGE = (
    "TimestampRange with StartTimestamp and EndTimestamp is required for PlaybackMode ON_DEMAND."
)
SESSION_RANGE_MAX = "EndTimestamp must follow StartTimestamp by at most 24 hours."
NO_FRAGMENTS_FOR_SESSION = "No fragments found in the stream for the streaming request."
NO_FRAGMENTS = "No fragments found."


def unknown_session_resource(*, name: object) -> str:
    return f"Unknown HLS resource {name}."


# --- The web console's video pages (console/video_pages.py) --------------------------------


def console_timestamp_unreadable(*, text: object) -> str:
    return f"The timestamp {text!r} is neither ISO 8601 nor seconds since the epoch."


def console_playback_mode_invalid(*, playback_modes: object) -> str:
    return f"PlaybackMode must be one of {playback_modes}."


# --- The parsers' own errors, which PutMedia's acknowledgements and the signaling channel's
#     status responses carry -------------------------------------------------------------------

# --- ebml.py ----------------------------------------------------------------------------------

EBML_VINT_WITHOUT_MARKER = "VINT with no length marker in its first byte"


def ebml_size_too_large(*, size: object) -> str:
    return f"size {size} does not fit in an EBML VINT"


def ebml_float_size(*, size: object) -> str:
    return f"float of {size} bytes"


def ebml_id_too_long(*, length: object) -> str:
    return f"element id of {length} bytes (EBML allows at most 4)"


def ebml_unsigned_size(*, size: object) -> str:
    return f"unsigned integer of {size} bytes"


EBML_CHILD_TRUNCATED = "truncated or unknown-size child element"
EBML_CHILD_PAST_PARENT = "child element runs past its parent"

# --- mkv.py -----------------------------------------------------------------------------------


def mkv_unexpected_top_element(*, element_id: object) -> str:
    return f"expected an EBML header or a Segment, found element 0x{element_id:X}"


def mkv_too_many_notification_tags(*, maximum: object) -> str:
    return f"More than {maximum} notification metadata tags."


MKV_TRUNCATED_BLOCK = "a truncated block"
MKV_NESTED_SEGMENT = "a Segment inside a Segment"
MKV_UNKNOWN_SIZE_IN_SEGMENT = "an unknown-size element in the Segment"


def mkv_element_outside_cluster(*, element_id: object, size: object) -> str:
    return f"element 0x{element_id:X} of {size} bytes outside a Cluster"


MKV_UNKNOWN_SIZE_IN_CLUSTER = "an unknown-size element in a Cluster"


def mkv_fragment_too_large(*, maximum: object) -> str:
    return f"Fragment size is greater than the maximum, {maximum} bytes."


MKV_ELEMENT_PAST_CLUSTER = "an element runs past its Cluster"
MKV_CLUSTER_WITHOUT_TIMECODE = "a Cluster without a Timecode"
MKV_TIMECODE_BACKWARDS = "Fragment timecode is less than the timecode of the previous fragment."


def mkv_fragment_too_long(*, maximum: object) -> str:
    return f"Fragment duration is greater than the maximum, {maximum} seconds."


MKV_TRACKS_WITHOUT_ENTRY = "Tracks without a TrackEntry"


def mkv_too_many_tracks(*, maximum: object) -> str:
    return f"More than {maximum} tracks found in the MKV header."


MKV_NOTIFICATION_TAG_TOO_LONG = (
    "A notification metadata name is over 128 bytes or its value over 256."
)
MKV_BODY_ENDED_IN_CLUSTER = "the body ended inside a Cluster"
MKV_BODY_ENDED_IN_ELEMENT = "the body ended inside an element"
MKV_CLUSTER_BEFORE_TRACKS = "a Cluster before the Tracks"
MKV_UNKNOWN_SIZE_EBML_HEADER = "an unknown-size EBML header"
MKV_TRACK_ENTRY_WITHOUT_NUMBER = "a TrackEntry without a number"


def mkv_frame_track_unknown(*, track: object) -> str:
    return f"A frame's track number {track} is not in the MKV header."


def mkv_track_without_frame(*, number: object) -> str:
    return f"The fragment has no frame for track {number}."


MKV_ZERO_TIMECODE_SCALE = "a TimecodeScale of 0"

# --- signaling.py -----------------------------------------------------------------------------

SIGNALING_MASTER_NEEDS_RECIPIENT = "A message from the master must name its recipientClientId."

# --- signaling_rules.py -----------------------------------------------------------------------

SIGNALING_NOT_AN_OBJECT = "The message is not a JSON object."
SIGNALING_NOT_JSON = "The message is not JSON."


# --- Edge configurations, storage tiers, mapped resources (edge_storage.py) ------------------


def edge_sync_failed(*, hub_device_arn: object, minutes: object) -> str:
    return (
        f"No Edge Agent on the hub device {hub_device_arn} acknowledged the edge configuration "
        f"within {minutes} minutes."
    )


def schedule_expression_invalid(*, member: object, expression: object) -> str:
    return (
        f"{member} '{expression}' is not a Quartz cron expression: it must have 6 or 7 fields "
        "(seconds, minutes, hours, day of month, month, day of week, and an optional year)."
    )
