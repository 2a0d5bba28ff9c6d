"""The promise: pure decisions, the guard on one host and on a fleet, and the waits."""
