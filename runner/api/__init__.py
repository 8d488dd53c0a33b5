"""The RunComfy edge: HTTP sessions, the API client, retries and output downloads."""
