"""The realtime hub: pushes job progress to browsers over Server-Sent Events
and long-poll. This package imports nothing heavy, so actors can use its
shared modules (settings, keys, journal) without pulling in Tornado."""
