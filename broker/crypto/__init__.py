"""Encryption at rest (issue 15): master keys and the node's keyring of stream data keys.

    master_keys.py   the master keys that wrap data keys: a local key file (the default) or a
                     KMS-compatible service through boto3 (`AWS_ENDPOINT_URL_KMS`)
    keyring.py       the node's `BatchKeys`: which data key seals a shard's new batches, and
                     the unwrapped keys that open its stored ones, from the metadata image

The batch cipher itself (AES-256-GCM over a stored batch's payload) is `broker/log/encryption.py`.
"""
