"""Who may do what: identities, access keys and IAM-style policies (issue 15).

- `policy.py`: AWS's JSON policy language parsed into values and evaluated (pure).
- `conditions.py`: the Condition operators (pure).
- `actions.py`: the IAM action and resource ARN a request of any served service names (pure).
- `identities.py`: principals, access keys and their attached policies, as metadata values.
- `sealing.py`: access-key secrets sealed with the cluster's IAM key (AES-256-GCM).
- `directory.py`: access key id -> secret and principal, from configured keys and the image.
- `enforcer.py`: the shell every door's call goes through: authorize, audit, call.

Pure modules import no I/O libraries (an import-linter contract); `broker.meta` stores the
identities and `broker.gateway` authenticates callers.
"""
