"""Media streams: the Kinesis Video Streams API (DESIGN §8).

Pure rules (no I/O, no asyncio; named in the "pure cores" import contract):

    ebml.py              EBML framing: element ids, sizes, the few value types
    mkv.py               a PutMedia body cut into fragments (one Cluster each), AWS's limits
    acks.py              PutMedia's acknowledgements and AWS's error ids
    fragment_records.py  a fragment as records of the internal stream (chunked), and back
    media_chunks.py      GetMedia's MKV chunks with AWS's tags
    hls.py               HLS session tokens and playlists
    messages.py          every error text the package raises (the catalogue, issue 14)

The adapter for FFmpeg (the one module importing PyAV, blocking: run in a worker thread):

    media_codec.py       remux to fragmented MP4 / MPEG-TS / MP4 clips, images as JPEG/PNG

The operations behind both doors (loop-bound):

    control.py           the control plane (CreateStream, DescribeStream, tags, ...)
    archive.py           fragments in the video stream's internal Kinesis stream
    put_media.py         one PutMedia session: body in, acknowledgements out
    media.py             GetMedia, ListFragments, GetMediaForFragmentList
    hls_service.py       GetHLSStreamingSessionURL and the session's playlists and segments
    clips.py             GetClip, GetImages
    service.py           the node's video service: all of the above behind one `call`

Metadata lives in the quorum (`broker/meta/video_table.py`, `transitions/video_streams.py`);
the HTTP door is `broker/gateway/video_http.py`.
"""
