"""Detections as data: Sigma rules for logs, YARA-X rules for files, indicator lists, and their engines."""
